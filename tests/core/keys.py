"""HMAC keys for the tests: strong enough for the weak-key check
(``signing.weakness``), named after the short keys they replace."""

K1 = "key-one-7c41e9b02f5d8a36"
K2 = "key-two-e18b5f3a90c6d274"
K9 = "key-nine-4b7e0d2c9f61a853"
OLD = "old-key-96f2c0e8b4a1d357"
NEW = "new-key-2d8a61f0c5e94b73"
RETIRED = "retired-key-a0c7e3f5912b64d8"
REAL = "real-key-5e1b9d07c3f8a246"
OTHER = "other-key-c93f5a1e07b2d864"
