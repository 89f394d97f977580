"""A tempest plugin that fails when a request is no longer traced end to
end: real API calls with trace headers, then assertions on the trace the
services stored (span kinds, services, nesting, nothing left open, no
secret recorded).  See ``stacktrail_tempest_plugin.config`` for its
``[stacktrail_tracing]`` options."""
