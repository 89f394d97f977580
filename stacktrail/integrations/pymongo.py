"""MongoDB commands as ``mongodb`` spans, through pymongo command monitoring.

pymongo reports each command three times (started, then succeeded or
failed) with the same request id and connection id; the open span's handle
is kept under that pair, which is what identifies the call in pymongo.

Scope: pymongo can only add a listener, globally (``monitoring.register``,
for clients created afterwards) or per client
(``MongoClient(event_listeners=[listener()])``); it cannot remove one.  So
``enable()`` registers one global listener once and ``disable()`` makes it
inert; per-client listeners are inert while their own ``active`` is False.
Both share the open-span table, so a command seen by two listeners is
recorded once.

Recorded: command name, database, collection, duration, failure.  Document
contents (filters, updates, replies) only with ``show_documents``.
"""

import threading

from pymongo import monitoring

from stacktrail.common import kinds
from stacktrail.integrations import _base

NAME = "mongodb"
_MAX_OPEN = 10000
_open = {}
_lock = threading.Lock()


class TraceListener(monitoring.CommandListener):
    """A pymongo command listener making spans while ``active``."""

    def __init__(self, show_documents=False, active=True):
        self.show_documents = show_documents
        self.active = active

    def started(self, event):
        if not self.active or not _base.active():
            return
        try:
            key = (event.request_id, event.connection_id)
            if key in _open:
                return
            handle = _base.leaf_start(NAME, self._info(event))
            if handle is not None:
                _remember(key, handle)
        except Exception:
            _base.swallowed("pymongo")

    def _info(self, event):
        name = event.command_name
        mongo = {"command": name, "database": event.database_name}
        target = event.command.get(name)
        if isinstance(target, str):
            mongo["collection"] = target
        host = event.connection_id
        if isinstance(host, tuple) and len(host) == 2:
            mongo["host"], mongo["port"] = host
        if self.show_documents:
            mongo["document"] = str(dict(event.command))[:2000]
        return kinds.DB.start_info(mongo)

    def succeeded(self, event):
        handle = _finished(event)
        if handle is not None:
            done = {"duration_us": event.duration_micros}
            if self.show_documents:
                done["reply"] = str(dict(event.reply))[:2000]
            _base.guard("pymongo", _base.leaf_stop, handle,
                        kinds.DB.stop_info(done))

    def failed(self, event):
        handle = _finished(event)
        if handle is not None:
            _base.guard("pymongo", _base.leaf_stop, handle, _failure(event))


def _remember(key, handle):
    with _lock:
        if len(_open) >= _MAX_OPEN:
            # Commands whose end never came (a killed connection): drop
            # them rather than grow without bound.
            _open.clear()
        _open[key] = handle


def _finished(event):
    if not _open:
        return None
    return _open.pop((event.request_id, event.connection_id), None)


def _failure(event):
    # pymongo gives the server's error document, or for a network error
    # {"errmsg": ..., "errtype": exception class name}.
    failure = event.failure
    if not isinstance(failure, dict):
        failure = {"errmsg": str(failure)}
    info = kinds.DB.stop_info({"duration_us": event.duration_micros,
                               "code": failure.get("code")})
    return {"etype": failure.get("errtype") or "OperationFailure",
            "message": str(failure.get("errmsg", "")), **info}


def listener(show_documents=False):
    """A listener for one client: ``MongoClient(event_listeners=[...])``."""
    return TraceListener(show_documents=show_documents)


class _Global(_base.Instrumentor):
    """Clients created from now on; ``enable(show_documents=True)`` records
    (truncated) commands and replies."""

    name = "pymongo"
    listener = None

    def _enable(self, patcher, show_documents=False):
        if _Global.listener is None:
            _Global.listener = TraceListener(active=False)
            monitoring.register(_Global.listener)
        _Global.listener.show_documents = show_documents
        _Global.listener.active = True

    def _disable(self):
        _Global.listener.active = False


_global = _Global()
enable, disable, is_enabled = _base.module_functions(_global)
