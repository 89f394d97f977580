"""Fixtures of the tempest runs: the cached Zaqar and tempest
environments, this clone installed once for both, a second Redis db."""

from tests.services.conftest import second_redis_url  # noqa: F401
from tests.services.conftest import stacktrail_overlay  # noqa: F401
from tests.services.conftest import zaqar_env  # noqa: F401
