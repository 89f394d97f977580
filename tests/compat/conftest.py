"""Both libraries start every test from their defaults: osprofiler's and
stacktrail's process-wide state (notifier, web switch, current trace, live
settings, runtime) is reset before and after each test."""

from tests.state import clean_state  # noqa: F401
