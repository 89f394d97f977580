"""osprofiler's signed trace info: URL-safe base64 JSON plus HMAC-SHA1.

The byte layout is osprofiler 4.x's, so headers signed by either library
validate in the other.
"""

import base64
import hashlib
import hmac
import json
import logging

LOG = logging.getLogger(__name__)

# Values shipped as examples by devstack and osprofiler's own defaults.
DEFAULT_LOOKING_KEYS = frozenset({"secret_key", "secret_hmac_key", "secret"})
MAX_PACKED = 4096


def split_keys(keys):
    """A list of keys from osprofiler's comma-separated text (or a list)."""
    if not keys:
        return []
    if isinstance(keys, str):
        keys = keys.split(",")
    return [k.strip() for k in keys if k and k.strip()]


def usable_keys(keys, allow_insecure=False):
    """Keys allowed to validate incoming headers, refusing default-looking ones.

    Anyone who read the documentation knows ``SECRET_KEY``; accepting it would
    let any caller switch tracing on.
    """
    keys = split_keys(keys)
    if allow_insecure:
        return keys
    refused = [k for k in keys if k.lower() in DEFAULT_LOOKING_KEYS]
    if refused:
        LOG.warning("stacktrail: refusing the default-looking HMAC key %r "
                    "for header-triggered tracing; set [profiler] hmac_keys "
                    "to a random secret (or allow_insecure_hmac_keys = true "
                    "for a test cloud)", refused[0])
    return [k for k in keys if k.lower() not in DEFAULT_LOOKING_KEYS]


def digest(data, key):
    if isinstance(data, str):
        data = data.encode()
    # The one-shot C digest: a third of hmac.new()'s cost per request.
    return hmac.digest(key.encode(), data, hashlib.sha1).hex()


def pack(data, key):
    """(base64 text, hex HMAC) of a dict, as osprofiler's signed_pack."""
    packed = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    return packed, digest(packed, key)


def unpack(packed, mac, keys):
    """(data, key that validated) for a valid signature, else None.

    Every key is tried with a constant-time compare, so the key in use
    downstream is the one the caller signed with (key rotation).
    """
    if not packed or not mac or not keys or len(packed) > MAX_PACKED:
        return None
    mac = mac.strip().lower()
    if not mac.isascii():
        return None
    for key in keys:
        if hmac.compare_digest(digest(packed, key), mac):
            data = _decode(packed)
            return (data, key) if data is not None else None
    return None


def _decode(packed):
    try:
        data = json.loads(base64.urlsafe_b64decode(packed.encode()))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None
