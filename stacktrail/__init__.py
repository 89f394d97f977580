"""stacktrail: one request, one trace, across every OpenStack service."""

__version__ = "0.1.0"
