"""Fixtures of the test that runs zaqar-server as the plugin configured
it: the cached Zaqar environment, this clone installed once (shared with
the tempest tests)."""

from tests.services.conftest import stacktrail_overlay  # noqa: F401
from tests.services.conftest import zaqar_env  # noqa: F401
