"""The ``path`` fixture: a test run with the compiled codec (orjson), then
with it forced off (the pure standard-library fallback).  A test module
takes it with ``from tests.codec_paths import path  # noqa: F401``."""

import pytest

from stacktrail.drivers import codec


@pytest.fixture(params=["fast", "stdlib"])
def path(request):
    fast = request.param == "fast"
    if fast and not codec.AVAILABLE:
        pytest.skip("orjson is not installed (pip install stacktrail[fast])")
    before = codec.FAST
    assert codec.use(fast) == fast
    yield request.param
    codec.use(before)
