"""Thread pools run each task in the trace of the code that submitted it.

A new thread starts with an empty context, so without help a request made
from a pool thread belongs to no trace: openstacksdk uploads the segments
of a Large Object to Swift from its connection's pool
(``Connection._pool_executor``, a ``concurrent.futures.ThreadPoolExecutor``
or the futurist executor the caller passed as ``pool_executor``), and
asyncio's ``loop.run_in_executor`` hands callables to a
``ThreadPoolExecutor`` without copying the context (``asyncio.to_thread``
does copy it).

``enable()`` replaces ``submit`` on those executor classes: a callable
submitted inside a client trace (one started by ``stacktrail.client``, so
a service's own traces keep the rule that a new thread starts clean) is
bound to the trace position current where it was submitted, restored
around the call in the worker thread and reset afterwards, so a worker
that serves several traces in turn (two commands sharing one connection)
never mixes them.  Anywhere else the replacement costs one context
lookup.  ``map`` goes through ``submit``.  A process pool is not touched:
a trace crosses a process boundary only in headers.

Switched on by ``stacktrail.client.trace`` (and so by the ``openstack``
command's ``--os-profile``); ``disable()`` restores the classes.
"""

import functools

from stacktrail.adapters import toolkit
from stacktrail.common import context
from stacktrail.integrations import _base

# Executor classes whose ``submit`` starts work on another thread or
# greenthread: "module:Class".  futurist's are patched when (and if) it is
# imported; its SynchronousExecutor runs the callable in the caller's
# context already.
CLASSES = (
    "concurrent.futures:ThreadPoolExecutor",
    "futurist:ThreadPoolExecutor",
    "futurist:GreenThreadPoolExecutor",
)


_MARK = "_stacktrail_carries"
CARRY = "stacktrail_client_carry"   # set on a client trace's profiler


def carries(frame):
    """True when work submitted at ``frame`` goes with it."""
    return frame is not None and getattr(frame.profiler, CARRY, False)


def carrying_submit(submit):
    """An executor class's ``submit`` that binds the callable to the
    client trace current where it is submitted."""
    current = context.current.get

    @functools.wraps(submit)
    def carrying(self, fn, *args, **kwargs):
        frame = current()
        if not carries(frame):
            return submit(self, fn, *args, **kwargs)
        return submit(self, bound(frame, fn), *args, **kwargs)
    setattr(carrying, _MARK, True)
    return carrying


def bound(frame, fn):
    """``fn`` run at trace position ``frame`` (in any thread)."""
    @functools.wraps(fn)
    def carried(*args, **kwargs):
        with context.restored(frame):
            return fn(*args, **kwargs)
    return carried


class _Executors(_base.Instrumentor):
    name = "executors"
    _live = False

    def _enable(self, patcher):
        self._live = True
        for path in CLASSES:
            module_name, _, class_name = path.partition(":")
            toolkit.when_imported(module_name, self._hook(class_name,
                                                          patcher))

    def _disable(self):
        self._live = False

    def _hook(self, class_name, patcher):
        def patch(module):
            # A post-import hook may fire after ``disable``: then, and for
            # a class that carries already (an adapter patched it), nothing.
            cls = getattr(module, class_name, None)
            if not self._live or cls is None:
                return
            submit = vars(cls).get("submit")
            if submit is None or getattr(submit, _MARK, False):
                return
            patcher.patch(cls, "submit", carrying_submit(submit))
        return lambda module: _base.guard("executors", patch, module)


_executors = _Executors()
enable, disable, is_enabled = _base.module_functions(_executors)
