"""The Cinder adapter: every Cinder service traced from its configuration.

Loaded as ``cinder`` from the ``stacktrail.adapters`` entry points when a
Cinder service parses a configuration that names stacktrail's config source
(``etc/cinder/stacktrail.conf``).  Cinder calls osprofiler itself; taken
over, its calls feed stacktrail, and the declarations below add what its
own wiring lacks:

* one trace per request: ``wsgi`` (the ``osprofiler`` filter already in
  ``api-paste.ini``, now stacktrail's), ``rpc`` on the client and the
  server side of every call and cast (the ``trace_rpc`` integration; it
  carries osprofiler's ``trace_info`` too, so a service still on
  osprofiler joins), ``driver`` for every volume and backup driver call
  (``trace_drivers``: Cinder wraps its volume driver whatever that flag
  says), ``db`` for every statement of every engine (``trace_sqlalchemy``:
  Cinder's own SQL hook is built but never registered), ``http`` for calls
  to Nova, Glance and Keystone (``trace_requests``);
* each span names the service and host that did the work, also when the
  API, the scheduler and the volume service share one process: an RPC
  message records as the service whose manager it is dispatched to.

Cinder's ``trace_cls("rpc")`` and ``trace_cls("driver")`` call sites are
left to do nothing: the spans come from the declarations, gated by the
flags, and Cinder's test base mocks ``trace_cls`` anyway.
"""

from stacktrail.adapters import Adapter
from stacktrail.adapters import toolkit


class CinderAdapter(Adapter):
    name = "cinder"
    takeover = True
    wiring = (
        toolkit.Serves("cinder.service:Service"),
        toolkit.TraceCreated("cinder.volume.driver:BaseVD", toolkit.DRIVER),
        toolkit.TraceCreated("cinder.backup.driver:BackupDriver",
                             toolkit.DRIVER),
    )
