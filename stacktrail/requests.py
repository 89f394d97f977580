"""osprofiler's ``osprofiler.requests`` API: trace the ``requests`` library.

A thin re-export of ``stacktrail.integrations.http`` (which also covers
keystoneauth1 sessions, closes the span when a call raises, and injects
the trace headers in the formats ``[profiler] propagation`` names).
"""

from stacktrail.integrations.http import disable  # noqa: F401
from stacktrail.integrations.http import enable  # noqa: F401
from stacktrail.integrations.http import instrument_session  # noqa: F401
from stacktrail.integrations.http import is_enabled  # noqa: F401
from stacktrail.integrations.http import uninstrument_session  # noqa: F401

__all__ = ["disable", "enable", "instrument_session", "is_enabled",
           "uninstrument_session"]
