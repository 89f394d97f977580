"""stacktrail-agent: the per-node daemon that takes trace points off the
request path (listener -> spool -> one writer per backend).

Services send to it with ``[profiler] connection_string = agent:///path``
(``stacktrail.drivers.agent``); the wire format is ``protocol``.
"""
