"""Redis commands and pipelines as ``redis`` spans (redis-py, sync and \
asyncio).

Scope: ``enable()`` patches the client classes (every client, also the ones
created before); ``instrument_client(client)`` one client (and the
pipelines it makes).  A command seen by both is recorded once.

Recorded: the command name and how many keys it names; for a pipeline the
number of commands and their names.  Never values or key names.
"""

import contextvars
import functools

import redis
import redis.asyncio.client as aclient
import redis.client as sclient

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import kinds
from stacktrail.integrations import _base

NAME = "redis"
_MAX_NAMES = 20
# Set while a traced command runs: the inner layers of one call (a
# per-client wrapper over the patched class, a pipeline's immediate
# command) must not record it again.
_inside = contextvars.ContextVar("stacktrail_redis", default=False)
# Read by every command (``_begin``).
_traced_here = context.current.get
_emitting = context.emitting.get
_open_leaf = profiler.open_leaf
_close_leaf = profiler.close_leaf

# Commands whose arguments are all keys, and those without keys.
_ALL_KEYS = frozenset(("MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH",
                       "SINTER", "SUNION", "SDIFF", "PFCOUNT"))
_NO_KEYS = frozenset(("PING", "INFO", "SELECT", "FLUSHDB", "FLUSHALL",
                      "MULTI", "EXEC", "DISCARD", "UNWATCH", "CLIENT",
                      "CONFIG", "SCRIPT", "DBSIZE", "TIME", "AUTH", "HELLO",
                      "ECHO", "SCAN", "KEYS", "PUBLISH", "MODULE", "COMMAND",
                      "FUNCTION", "SWAPDB", "RANDOMKEY", "WAIT"))
_NUMKEYS = frozenset(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL",
                      "FCALL_RO"))


_NAMES = {}   # command as redis-py got it -> its upper-case text


def _name(args):
    name = args[0] if args else ""
    try:
        return _NAMES[name]
    except (KeyError, TypeError):
        pass
    text = name.decode("ascii", "replace") if isinstance(name, bytes) \
        else str(name)
    if type(name) in (str, bytes) and len(_NAMES) < 1000:
        _NAMES[name] = text.upper()   # a few dozen commands in practice
    return text.upper()


def key_count(args, name=None):
    """How many keys a command names (an estimate for exotic commands)."""
    name = name or _name(args)
    rest = len(args) - 1
    if name in _NO_KEYS or rest <= 0:
        return 0
    if name in _ALL_KEYS:
        return rest
    if name in ("MSET", "MSETNX"):
        return rest // 2
    if name in _NUMKEYS:
        try:
            return int(args[2])
        except (IndexError, TypeError, ValueError):
            return 0
    return 1


# (command as redis-py got it, argument count, db) -> the start info of
# such a command.  Recorded as it is and never changed, so one dict serves
# them all; a script's key count comes from its arguments, so scripts are
# left out.
_INFOS = {}


def _command_info(client, args):
    try:   # set by _db_of on the client's pool at its first command
        db = client.connection_pool._stacktrail_db
    except AttributeError:
        db = _db_of(client)
    try:
        return _INFOS[args[0], len(args), db]
    except (KeyError, IndexError, TypeError):
        pass
    name = _name(args)
    info = kinds.DB.start_info({"system": "redis", "command": name,
                                "keys": key_count(args, name), "db": db})
    if name not in _NUMKEYS and len(_INFOS) < 1000 and type(db) is int and \
            args and type(args[0]) in (str, bytes):
        _INFOS[args[0], len(args), db] = info
    return info


def _pipeline_info(pipe):
    stack = getattr(pipe, "command_stack", ())
    names = [_name(c[0]) for c in list(stack)[:_MAX_NAMES]]
    return kinds.DB.start_info({
        "system": "redis", "command": "PIPELINE", "commands": len(stack),
        "names": names,
        "transaction": bool(getattr(pipe, "transaction", False)),
        "db": _db_of(pipe)})


def _db_of(client):
    """The db number of the client's connection pool, kept on the pool
    (its connection arguments never change), so later commands read one
    attribute."""
    try:
        pool = client.connection_pool
        db = pool.connection_kwargs.get("db", 0)
    except AttributeError:
        return 0
    try:
        pool._stacktrail_db = db
    except AttributeError:   # a pool with __slots__: looked up each time
        pass
    return db


def _begin(frame, info_fn, client, arg):
    """(handle, context token) of a new span under ``frame`` (the current
    one, not None), or None when this command is not recorded: a command
    of a traced call already recording (a pipeline's own commands), or a
    notifier writing its points."""
    if _inside.get() or _emitting():
        return None
    try:
        info = info_fn(client, arg)
    except Exception:
        _base.swallowed("redis")
        return None
    return _open_leaf(frame, NAME, info), _inside.set(True)


def _failed(span, exc):
    handle, token = span
    _inside.reset(token)
    _base.guard("redis", _close_leaf, handle, _base.error_info(exc))


def _traced(original, info_fn):
    """Sync wrapper of a client method; ``info_fn(client, args)``."""
    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        frame = _traced_here()
        if frame is None:   # most commands: one lookup
            return original(self, *args, **kwargs)
        span = _begin(frame, info_fn, self, args)
        if span is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            _failed(span, exc)
            raise
        _inside.reset(span[1])
        _close_leaf(span[0])   # enqueues a tuple: cannot fail
        return result
    return wrapper


def _traced_async(original, info_fn):
    """asyncio wrapper: the same, awaited."""
    @functools.wraps(original)
    async def wrapper(self, *args, **kwargs):
        frame = _traced_here()
        if frame is None:   # most commands: one lookup
            return await original(self, *args, **kwargs)
        span = _begin(frame, info_fn, self, args)
        if span is None:
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            _failed(span, exc)
            raise
        _inside.reset(span[1])
        _close_leaf(span[0])   # enqueues a tuple: cannot fail
        return result
    return wrapper


def _pipe_info(pipe, args):
    return _pipeline_info(pipe)


# (module, class, method, wrapper factory, info)
_TARGETS = (
    (sclient, "Redis", "execute_command", _traced, _command_info),
    (sclient, "Pipeline", "immediate_execute_command", _traced,
     _command_info),
    (sclient, "Pipeline", "execute", _traced, _pipe_info),
    (aclient, "Redis", "execute_command", _traced_async, _command_info),
    (aclient, "Pipeline", "immediate_execute_command", _traced_async,
     _command_info),
    (aclient, "Pipeline", "execute", _traced_async, _pipe_info),
)


class _Global(_base.Instrumentor):
    """Every redis.Redis and redis.asyncio.Redis client."""

    name = "redis"

    def _enable(self, patcher):
        for module, cls_name, method, factory, info_fn in _TARGETS:
            cls = getattr(module, cls_name)
            patcher.patch(cls, method, factory(getattr(cls, method),
                                               info_fn))


_global = _Global()
enable, disable, is_enabled = _base.module_functions(_global)


# --- one client --------------------------------------------------------------

_CLIENT_ATTR = "_stacktrail_patcher"


def instrument_client(client):
    """Trace one client (sync or asyncio) and the pipelines it makes."""
    if getattr(client, _CLIENT_ATTR, None) is not None:
        return False
    patcher = _base.Patcher()
    is_async = isinstance(client, aclient.Redis)
    factory = _traced_async if is_async else _traced
    bound_cls = type(client)
    command = factory(getattr(bound_cls, "execute_command"), _command_info)
    patcher.patch(client, "execute_command",
                  command.__get__(client, bound_cls))
    original_pipeline = client.pipeline

    @functools.wraps(original_pipeline)
    def pipeline(*args, **kwargs):
        pipe = original_pipeline(*args, **kwargs)
        _instrument_pipeline(pipe, factory)
        return pipe

    patcher.patch(client, "pipeline", pipeline)
    setattr(client, _CLIENT_ATTR, patcher)
    return True


def _instrument_pipeline(pipe, factory):
    cls = type(pipe)
    for method, info_fn in (("execute", _pipe_info),
                            ("immediate_execute_command", _command_info)):
        wrapped = factory(getattr(cls, method), info_fn)
        setattr(pipe, method, wrapped.__get__(pipe, cls))


def uninstrument_client(client):
    patcher = getattr(client, _CLIENT_ATTR, None)
    if patcher is None:
        return False
    patcher.restore()
    delattr(client, _CLIENT_ATTR)
    return True


__all__ = ["enable", "disable", "is_enabled", "instrument_client",
           "uninstrument_client", "key_count", "redis"]
