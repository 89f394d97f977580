"""``stacktrail``: read traces from a store or a file and show them.

    stacktrail trace show <base_id|file> [--text|--json|--html|--dot]
                          [--out FILE] [--connection-string S] [--timeout T]
    stacktrail trace list [--error-trace] [--limit N] [--json] [--timeout T]
    stacktrail agent status [--config-file F]
    stacktrail status [--status-dir DIR]
    stacktrail --version

The connection string comes from ``--connection-string``, else the
``STACKTRAIL_CONNECTION_STRING`` environment variable, else ``[profiler]
connection_string`` of ``--config-file``.

Every failure is one line on stderr and a non-zero exit status (1, or 2
for a usage error); ``--debug`` shows the traceback and driver logs too.
A store that does not answer costs at most ``--timeout`` seconds (default
10): the store call runs in a helper thread, which is abandoned then, and
the drivers get the same bound for their own connects, reads and writes.
Records a store holds that cannot be read are skipped and named in one
warning line on stderr.
"""

import argparse
import json
import logging
import os
import sys
import threading

import stacktrail
from stacktrail.common import logtext

ENV_CONNECTION = "STACKTRAIL_CONNECTION_STRING"
PROG = "stacktrail"
DEFAULT_TIMEOUT = 10.0


class CLIError(Exception):
    """A failure the user can act on, said in one line."""


# connection string and config file

def load_config(config_files):
    """A private ConfigOpts with the [profiler] options, read from files.

    Private so that the CLI never touches (or is touched by) the global
    CONF of a library imported in the same process.
    """
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    try:
        from stacktrail import opts
        opts.register_opts(conf)
    except ImportError:  # the options module is optional for the CLI
        conf.register_opts([cfg.StrOpt("connection_string")],
                           group="profiler")
    args = []
    for path in config_files:
        args += ["--config-file", path]
    try:
        conf(args=args, project=PROG, default_config_files=[],
             default_config_dirs=[], use_env=False)
    except cfg.ConfigFilesNotFoundError as exc:
        raise CLIError("config file not found or unreadable: %s"
                       % ", ".join(exc.config_files)) from None
    except cfg.Error as exc:
        raise CLIError("bad config file: %s" % logtext.one_line(exc, with_type=False)) from None
    return conf


def connection_string(args, conf):
    """Option, then environment, then config file (None if none of them)."""
    if getattr(args, "connection_string", None):
        return args.connection_string
    if os.environ.get(ENV_CONNECTION):
        return os.environ[ENV_CONNECTION]
    if conf is not None:
        return conf.profiler.connection_string
    return None






def open_driver(args):
    from stacktrail.drivers import base

    conf = load_config(args.config_file) if args.config_file else None
    conn_str = connection_string(args, conf)
    if not conn_str:
        raise CLIError("no trace store given: use --connection-string, %s "
                       "or [profiler] connection_string in --config-file"
                       % ENV_CONNECTION)
    where = logtext.mask_passwords(conn_str)
    timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT
    try:
        try:
            return base.get_driver(conn_str, conf=conf,
                                   store_timeout=timeout), where
        except TypeError:   # a third-party driver without **kwargs
            return base.get_driver(conn_str, conf=conf), where
    except base.DriverError as exc:
        raise CLIError(logtext.one_line(exc, with_type=False)) from None
    except Exception as exc:
        raise CLIError("cannot use %s: %s"
                       % (where, logtext.one_line(exc, with_type=False))) from None


def within(timeout, what, call, *args):
    """``call(*args)`` in a helper thread; CLIError after ``timeout``
    seconds (the thread, stuck in a store that does not answer, is left
    behind: it is a daemon and the process exits)."""
    box = {}

    def run():
        try:
            box["value"] = call(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="stacktrail-cli-store",
                              daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CLIError("%s did not answer within %s s" % (
            what, ("%.1f" % timeout).rstrip("0").rstrip(".")))
    if "error" in box:
        raise box["error"]
    return box["value"]


def _warn_skipped(driver):
    skipped = list(getattr(driver, "skipped", None) or ())
    if skipped:
        names = ", ".join("%s (%s)" % (key, why) for key, why in skipped[:5])
        more = len(skipped) - 5
        print("%s: warning: skipped %d unreadable record%s: %s%s" % (
            PROG, len(skipped), "" if len(skipped) == 1 else "s",
            logtext.one_line(names, limit=600, with_type=False),
            " and %d more" % more if more > 0 else ""), file=sys.stderr)


# reading traces

def messages_from_file(path):
    """Messages from JSON lines (the file:// format), or a JSON list of
    messages, or a saved report (returned as such)."""
    try:
        with open(path, encoding="utf-8") as f:
            body = f.read()
    except OSError as exc:
        raise CLIError("cannot read %s: %s" % (path, exc.strerror)) from None
    stripped = body.strip()
    if not stripped:
        raise CLIError("%s is empty" % path)
    try:
        whole = loads_deep(stripped)
    except ValueError:
        whole = None
    if isinstance(whole, dict) and "children" in whole and "info" in whole:
        return None, whole
    if isinstance(whole, list):
        return whole, None
    if isinstance(whole, dict):
        return [whole], None
    messages = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages.append(json.loads(line))
        except ValueError:
            raise CLIError("%s line %d is not JSON" % (path, number)) from None
    return messages, None


DEEP_STACK = 256 << 20


def loads_deep(text):
    """``json.loads`` for documents nested deeper than the recursion limit
    (a saved report of a trace thousands of spans deep): parsed again in a
    thread with a large stack and a high recursion limit."""
    try:
        return json.loads(text)
    except RecursionError:
        pass
    box = {}

    def run():
        try:
            box["value"] = json.loads(text)
        except BaseException as exc:
            box["error"] = exc

    limit = sys.getrecursionlimit()
    size = threading.stack_size()
    sys.setrecursionlimit(max(limit, 1_000_000))
    try:
        threading.stack_size(DEEP_STACK)
        thread = threading.Thread(target=run, name="stacktrail-json")
        thread.start()
    finally:
        threading.stack_size(size)
    thread.join()
    sys.setrecursionlimit(limit)
    if "error" in box:
        if isinstance(box["error"], RecursionError):
            raise ValueError("nested too deeply")
        raise box["error"]
    return box["value"]


def report_from_file(path):
    from stacktrail.report import tree

    messages, report = messages_from_file(path)
    if report is not None:
        return report
    messages = [m for m in messages if isinstance(m, dict)]
    base_ids = {m.get("base_id") for m in messages}
    if len(base_ids) > 1:
        raise CLIError("%s holds %d traces: use `stacktrail trace show "
                       "<base_id> --connection-string file://%s`"
                       % (path, len(base_ids), os.path.abspath(path)))
    report = tree.build(messages)
    if not report["children"]:
        raise CLIError("%s holds no trace points" % path)
    return report


def report_from_store(base_id, args):
    driver, where = open_driver(args)
    try:
        report = within(args.timeout, "the trace store %s" % where,
                        driver.get_report, base_id)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError("cannot read trace %s from %s: %s"
                       % (base_id, where, logtext.one_line(exc, with_type=False))) from None
    finally:
        _close(driver, args.timeout)
    _warn_skipped(driver)
    if not report or not report.get("children"):
        raise CLIError("trace %s not found in %s" % (base_id, where))
    return report


def _close(driver, timeout=DEFAULT_TIMEOUT):
    try:
        within(min(timeout, 2.0), "closing the store", driver.close)
    except Exception:  # closing must not hide the real outcome
        logging.getLogger(__name__).debug("close failed", exc_info=True)


def _looks_like_path(target):
    return (os.sep in target or target.endswith((".json", ".jsonl"))
            or target.startswith("."))


# commands

def cmd_trace_show(args):
    from stacktrail import report as reports

    if os.path.exists(args.target):
        report = report_from_file(args.target)
    elif _looks_like_path(args.target):
        raise CLIError("no such file: %s" % args.target)
    else:
        report = report_from_store(args.target, args)
    output = reports.render(report, args.format)
    _write(output, args.out)
    return 0


def cmd_trace_list(args):
    driver, where = open_driver(args)
    try:
        traces = within(args.timeout, "the trace store %s" % where,
                        driver.list_error_traces if args.error_trace
                        else driver.list_traces)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError("cannot list traces in %s: %s"
                       % (where, logtext.one_line(exc, with_type=False))) from None
    finally:
        _close(driver, args.timeout)
    _warn_skipped(driver)
    traces = sorted(traces, key=lambda t: str(t.get("timestamp", "")),
                    reverse=True)
    if args.limit is not None:
        traces = traces[:args.limit]
    if args.json:
        _write(json.dumps(traces, indent=2, default=str) + "\n", None)
        return 0
    from stacktrail.report.text import clean
    lines = ["%-26s  %s" % ("timestamp", "base_id")]
    lines += ["%-26s  %s" % (clean(t.get("timestamp", "")),
                             clean(t.get("base_id", ""))) for t in traces]
    if not traces:
        lines = ["no %straces in %s" % ("error " if args.error_trace else "",
                                        where)]
    _write("\n".join(lines) + "\n", None)
    return 0


def cmd_agent_status(args, extra):
    """Delegate to stacktrail.agent.status, imported only when asked for."""
    import importlib
    try:
        status = importlib.import_module("stacktrail.agent.status")
    except ImportError as exc:
        raise CLIError("agent status is not available: %s"
                       % logtext.one_line(exc, with_type=False)) from None
    parser = argparse.ArgumentParser(prog="%s agent status" % PROG)
    status.add_arguments(parser)
    agent_args = parser.parse_args(extra)
    if getattr(agent_args, "config_file", None) is None and args.config_file:
        agent_args.config_file = list(args.config_file)
    return status.run(agent_args)


def cmd_status(args):
    """The counters traced processes write to ``[profiler] status_dir``."""
    directory = args.status_dir
    if not directory and args.config_file:
        conf = load_config(args.config_file)
        directory = conf.profiler.status_dir
    if not directory:
        raise CLIError("no status directory given: use --status-dir or "
                       "[profiler] status_dir in --config-file")
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise CLIError("cannot read %s: %s" % (directory, exc.strerror)) \
            from None
    processes = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                status = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(status, dict):
            continue
        pid = status.get("pid")
        status["running"] = isinstance(pid, int) and os.path.exists(
            "/proc/%d" % pid)
        processes.append(status)
    if not processes:
        raise CLIError("no status files in %s (is [profiler] status_dir "
                       "set for the services?)" % directory)
    total = {"processes": len(processes), "written": 0, "dropped": 0,
             "drops": {}}
    for status in processes:
        total["written"] += int(status.get("written") or 0)
        total["dropped"] += int(status.get("dropped") or 0)
        for reason, count in (status.get("drops") or {}).items():
            total["drops"][reason] = total["drops"].get(reason, 0) + count
    _write(json.dumps({"total": total, "processes": processes}, indent=2,
                      sort_keys=True) + "\n", None)
    return 0


def _write(output, path):
    if path is None:
        sys.stdout.write(output)
        sys.stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(output)
    except OSError as exc:
        raise CLIError("cannot write %s: %s" % (path, exc.strerror)) from None


# parser

def _store_options(parser):
    parser.add_argument("--connection-string", metavar="S",
                        help="trace store, e.g. redis://127.0.0.1:6379 "
                             "(default: $%s, then [profiler] "
                             "connection_string of --config-file)"
                             % ENV_CONNECTION)
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT,
                        metavar="SECONDS",
                        help="give up on a store that does not answer "
                             "within SECONDS (default %g)" % DEFAULT_TIMEOUT)
    # Also accepted after the subcommand; SUPPRESS keeps a global value.
    parser.add_argument("--config-file", action="append",
                        default=argparse.SUPPRESS, metavar="FILE",
                        help=argparse.SUPPRESS)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Show traces recorded by stacktrail or "
                               "osprofiler.")
    parser.add_argument("--version", action="version",
                        version="%s %s" % (PROG, stacktrail.__version__))
    parser.add_argument("--config-file", action="append", default=[],
                        metavar="FILE",
                        help="oslo.config file with a [profiler] section "
                             "(repeatable)")
    parser.add_argument("--debug", action="store_true",
                        help="show driver logs and tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    trace = commands.add_parser("trace", help="show or list traces")
    trace_commands = trace.add_subparsers(dest="trace_command",
                                          metavar="{show,list}")
    trace_commands.required = True

    show = trace_commands.add_parser(
        "show", help="show one trace",
        description="Show one trace: a base_id read from the store, or a "
                    "file of JSON-lines messages, a JSON list of messages "
                    "or a saved JSON report.")
    show.add_argument("target", metavar="BASE_ID|FILE")
    formats = show.add_mutually_exclusive_group()
    for fmt, help_text in (
            ("text", "a text tree with the critical path (default)"),
            ("json", "the report as JSON (osprofiler's structure)"),
            ("html", "one self-contained interactive HTML page"),
            ("dot", "a Graphviz digraph")):
        formats.add_argument("--" + fmt, dest="format", action="store_const",
                             const=fmt, help=help_text)
    show.set_defaults(format="text", func=cmd_trace_show)
    show.add_argument("--out", metavar="FILE",
                      help="write to FILE instead of stdout")
    _store_options(show)

    listing = trace_commands.add_parser("list", help="list stored traces")
    listing.add_argument("--error-trace", action="store_true",
                         help="only traces that recorded an error")
    listing.add_argument("--limit", type=_positive, metavar="N",
                         help="only the N most recent")
    listing.add_argument("--json", action="store_true",
                         help="print JSON instead of a table")
    listing.set_defaults(func=cmd_trace_list)
    _store_options(listing)

    status = commands.add_parser(
        "status", help="counters of the traced processes on this node",
        description="Print the flusher counters (points written, dropped "
                    "by reason) that traced processes keep in [profiler] "
                    "status_dir.")
    status.add_argument("--status-dir", metavar="DIR",
                        help="default: [profiler] status_dir of "
                             "--config-file")
    status.add_argument("--config-file", action="append",
                        default=argparse.SUPPRESS, metavar="FILE",
                        help=argparse.SUPPRESS)
    status.set_defaults(func=cmd_status)

    agent = commands.add_parser("agent", help="the per-node agent")
    agent_commands = agent.add_subparsers(dest="agent_command",
                                          metavar="{status}")
    agent_commands.required = True
    agent_commands.add_parser(
        "status", add_help=False,
        help="ask the local agent for its status (options: see "
             "`stacktrail agent status --help`)")
    return parser


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError("expected a positive number of "
                                         "seconds, got %r" % text)
    return value


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer, got %r"
                                         % text)
    return value


def _configure_logging(debug):
    # Without --debug, library log records (a driver's retry warnings,
    # stevedore's load errors with tracebacks) would break the promise of
    # one line per failure, so only --debug shows them.
    root = logging.getLogger()
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    else:
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.CRITICAL + 1)


def main(argv=None):
    """Console entry point; ``argv`` given means a library caller, whose
    logging setup is left alone."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    agent_status = args.command == "agent"
    if extra and not agent_status:
        parser.error("unrecognized arguments: %s" % " ".join(extra))
    if argv is None:
        _configure_logging(args.debug)
    try:
        if agent_status:
            return cmd_agent_status(args, extra)
        return args.func(args)
    except CLIError as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. piped into head): not an error to report.
        _silence_stdout()
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print("%s: error: %s: %s" % (PROG, type(exc).__name__,
                                     logtext.one_line(exc, with_type=False)), file=sys.stderr)
    return 1


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
