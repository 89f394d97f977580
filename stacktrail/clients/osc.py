"""``openstack --os-profile <key> <command>``: a stacktrail trace per command.

python-openstackclient imports every module of the
``openstack.cli.extension`` entry point group at each command, before it
builds its option parser (``openstackclient.common.clientmanager``); this
module is such an entry point, so installing stacktrail into the client's
environment is all it takes: no sitecustomize, no PYTHONPATH, no osc-lib or
keystoneauth1 edited.  At import it takes over osc-lib's profiling hooks
(``osc_lib.shell.OpenStackShell``):

* osc-lib offers ``--os-profile`` (``OS_PROFILE``) only when
  ``osprofiler.profiler`` imported.  Without osprofiler, its module-level
  ``osprofiler_profiler`` gets ``stacktrail.profiler`` (same ``init``,
  ``get``, ``get_base_id``, ``get_shorten_id``), so the option is there and
  its end-of-command lines work.  With osprofiler, osprofiler's names are
  taken over (``adapters.takeover``) when a trace starts: what keystoneauth1,
  novaclient, cinderclient and zaqarclient call
  (``osprofiler.web.get_trace_id_headers()``, ``osprofiler.profiler.get()``)
  then answers with the stacktrail trace.
* ``init_profile`` starts ``client.trace(key, store, name="openstack",
  service="openstack")`` with the command's name (``server create``, never
  its arguments) in the span's info, which switches the ``requests``
  integration on (every HTTP request of the command is an ``http`` span
  carrying osprofiler's signed headers and W3C ``traceparent``: keystoneauth
  sessions, openstacksdk, the python-*clients) and the executor one
  (openstacksdk's pool threads stay in the trace).
* ``close_profile`` prints the trace id exactly as osc-lib does (its own
  code), plus the ``stacktrail trace show`` line; then the span stops with
  the command's exit code (and the exception cliff caught, if any), and
  the client's points are flushed.

The store: ``--os-profile-connection-string``
(``OS_PROFILE_CONNECTION_STRING``, else ``STACKTRAIL_CONNECTION_STRING``,
the variable ``stacktrail trace show`` reads).  Without one the command's
own span is not stored; the services still record the trace under the
printed id.

Tracing never fails the command: every hook swallows its own errors.
"""

import logging
import os
import sys

LOG = logging.getLogger(__name__)

# What python-openstackclient reads from a plugin module.  An empty default
# version means no command group: this plugin adds options, not commands.
API_NAME = "stacktrail"
API_VERSION_OPTION = "os_stacktrail_api_version"
DEFAULT_API_VERSION = ""
API_VERSIONS = ()

SPAN = "openstack"
SERVICE = "openstack"
STORE_VARIABLES = ("OS_PROFILE_CONNECTION_STRING",
                   "STACKTRAIL_CONNECTION_STRING")
_MARK = "_stacktrail_hooks"
_TRACES = "_stacktrail_traces"     # on the shell: open traces, innermost last
_PROFILER = "osprofiler_profiler"  # osc-lib's module-level name


def make_client(instance):
    """No API client: the plugin only traces the others."""
    return None


def build_option_parser(parser):
    """Add ``--os-profile-connection-string`` (and ``--os-profile`` when
    osc-lib did not)."""
    actions = getattr(parser, "_option_string_actions", {})
    if "--os-profile" not in actions:
        parser.add_argument(
            "--os-profile", metavar="hmac-key", dest="profile",
            default=os.environ.get("OS_PROFILE"),
            help="HMAC key for encrypting profiling context data "
                 "(Env: OS_PROFILE)")
    if "--os-profile-connection-string" not in actions:
        parser.add_argument(
            "--os-profile-connection-string", metavar="<connection-string>",
            dest="profile_connection_string", default=_env_store(),
            help="Where --os-profile stores this command's own span, e.g. "
                 "the services' redis://host:6379 (Env: "
                 "OS_PROFILE_CONNECTION_STRING or "
                 "STACKTRAIL_CONNECTION_STRING)")
    return parser


def _env_store():
    for name in STORE_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


# --- the hooks on osc-lib's shell ------------------------------------------

def install(shell_module=None):
    """Hook osc-lib's shell (idempotent); False when osc-lib is not
    running in this process."""
    shell = shell_module or sys.modules.get("osc_lib.shell")
    if shell is None or not hasattr(shell, "OpenStackShell"):
        return False
    cls = shell.OpenStackShell
    if vars(cls).get(_MARK):
        return True
    originals = {name: getattr(cls, name) for name in
                 ("run_subcommand", "init_profile", "close_profile",
                  "clean_up")}
    if getattr(shell, "osprofiler_profiler", None) is None:
        from stacktrail import profiler
        shell.osprofiler_profiler = profiler
        originals[_PROFILER] = None
    cls.run_subcommand = _run_subcommand(originals["run_subcommand"])
    cls.init_profile = _init_profile(originals["init_profile"])
    cls.close_profile = _close_profile(originals["close_profile"])
    cls.clean_up = _clean_up(originals["clean_up"])
    setattr(cls, _MARK, originals)
    return True


def uninstall(shell_module=None):
    """Put osc-lib's methods back (tests)."""
    shell = shell_module or sys.modules.get("osc_lib.shell")
    cls = getattr(shell, "OpenStackShell", None)
    originals = vars(cls).get(_MARK) if cls is not None else None
    if not originals:
        return False
    for name, method in originals.items():
        if name == _PROFILER:
            shell.osprofiler_profiler = method
        else:
            setattr(cls, name, method)
    delattr(cls, _MARK)
    return True


def _swallowed(where):
    LOG.debug("stacktrail: %s failed, command left untraced", where,
              exc_info=True)


def _run_subcommand(original):
    def run_subcommand(self, argv):
        # The command's name, for the span: cliff resolves it again later.
        try:
            self._stacktrail_command = _command_name(self, argv)
        except Exception:
            self._stacktrail_command = None
        return original(self, argv)
    return run_subcommand


def _command_name(shell, argv):
    _, name, _ = shell.command_manager.find_command(list(argv))
    return name


def _init_profile(original):
    def init_profile(self):
        key = getattr(self.options, "profile", None)
        if not key:
            return original(self)
        try:
            _start(self, key)
            self.do_profile = True
        except Exception:
            self.do_profile = False   # osc-lib's close_profile stays quiet
            _swallowed("starting the trace")
    return init_profile


def _start(shell, key):
    import importlib.util
    from stacktrail import client
    if importlib.util.find_spec("osprofiler") is not None:
        # keystoneauth1, novaclient, cinderclient, zaqarclient and osc-lib
        # call osprofiler's names: they must answer with our trace.
        from stacktrail.adapters import takeover
        takeover.install()
    command = {"program": "openstack"}
    name = getattr(shell, "_stacktrail_command", None)
    if name:
        command["name"] = name
    store = getattr(shell.options, "profile_connection_string", None) or \
        _env_store()
    trace = client.trace(key, store, name=SPAN, service=SERVICE,
                         info={"command": command})
    shell.__dict__.setdefault(_TRACES, []).append(trace.start())


def _clean_up(original):
    def clean_up(self, cmd, result, err):
        self._stacktrail_outcome = (result, err)
        return original(self, cmd, result, err)
    return clean_up


def _close_profile(original):
    def close_profile(self):
        traces = self.__dict__.get(_TRACES)
        trace = traces.pop() if traces else None
        if trace is None:
            return original(self)
        try:
            _print_ids(self, original, trace)
        finally:
            try:
                _stop(self, trace)
            except Exception:
                _swallowed("stopping the trace")
    return close_profile


def _print_ids(shell, original, trace):
    """osc-lib's own lines (Trace ID, short id, the osprofiler command),
    then how to read the trace with stacktrail."""
    try:
        original(shell)
    except Exception:
        _swallowed("osc-lib's close_profile")
        shell.log.warning("Trace ID: %s", trace.id)
    shell.log.warning("Display it with stacktrail:\n"
                      "stacktrail trace show %s", trace.id)


def _stop(shell, trace):
    result, err = shell.__dict__.pop("_stacktrail_outcome", (None, None))
    trace.stop(err, {"command": {"exit_code": result}}
               if result is not None else None)


install()
