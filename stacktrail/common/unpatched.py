"""Standard library modules as the OS provides them, even where eventlet
monkey-patched them: the flusher and the agent driver run in OS threads
of their own, whose waits must block only them, never the green hub."""

import importlib
import sys

# what eventlet records each module's patching under
_PATCH_NAMES = {"threading": "thread"}


def module(name):
    """The module ``name`` (``threading``, ``time``, ``socket``,
    ``select``) unpatched; resolved at each call, since eventlet may patch
    after a sink or driver was made."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched(
            _PATCH_NAMES.get(name, name)):
        return patcher.original(name)
    return importlib.import_module(name)
