"""``stacktrail``: read traces from a store or a file and show them.

    stacktrail trace show <base_id|file> [--text|--json|--html|--dot]
                          [--out FILE] [--connection-string S] [--timeout T]
                          [--html --compare <base_id|file>]
    stacktrail trace list [--since T] [--until T] [--service S]
                          [--min-duration D] [--errors]
                          [--sort start|duration] [--limit N]
                          [--format table|json] [--timeout T]
    stacktrail analyze [--window W] [--baseline W] [--root P] [--service S]
                       [--error|--no-error] [--text|--json|--html]
    stacktrail agent status [--config-file F]
    stacktrail agent install-unit [--output PATH] [--config-file F]
                                  [--user U] [--group G]
    stacktrail sampling show|set [--file F|--store URL|--agent-config F]
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
import gc
import json
import logging
import os
import sys
import threading
import time

import stacktrail
from stacktrail.common import logtext

ENV_CONNECTION = "STACKTRAIL_CONNECTION_STRING"
# The key ``openstack --os-profile`` reads from the environment too.
ENV_HMAC_KEY = "OS_PROFILE"
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
        raise CLIError("bad config file: %s"
                       % logtext.one_line(exc, with_type=False)) from None
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


def get_driver(conn_str, conf, timeout):
    """The driver of ``conn_str``, its store calls bounded by ``timeout``."""
    from stacktrail.drivers import base
    try:
        return base.get_driver(conn_str, conf=conf, store_timeout=timeout)
    except TypeError:   # a third-party driver without **kwargs
        return base.get_driver(conn_str, conf=conf)


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
        return get_driver(conn_str, conf, timeout), where
    except base.DriverError as exc:
        raise CLIError(logtext.one_line(exc, with_type=False)) from None
    except Exception as exc:
        raise CLIError("cannot use %s: %s"
                       % (where,
                          logtext.one_line(exc, with_type=False))) from None


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


# A trace at least this big says on stderr how far its report has come.
PROGRESS_POINTS = 200_000


def report_from_store(base_id, args):
    """The report of one stored trace.  ``--timeout`` bounds the reading
    (the store may hang); building the report of a big trace may take
    longer, and says so on stderr."""
    from stacktrail.drivers import base
    driver, where = open_driver(args)
    # A driver with a report of its own (not built from messages) gives it.
    whole = type(driver).get_report is not base.Driver.get_report
    started = time.monotonic()
    try:
        got = within(args.timeout, "the trace store %s" % where,
                     driver.get_report if whole else driver.get_messages,
                     base_id)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError("cannot read trace %s from %s: %s"
                       % (base_id, where,
                          logtext.one_line(exc, with_type=False))) from None
    finally:
        _close(driver, args.timeout)
    _warn_skipped(driver)
    report = got if whole else _build_report(got, started)
    if not report or not report.get("children"):
        raise CLIError("trace %s not found in %s" % (base_id, where))
    return report


def _build_report(messages, started):
    from stacktrail.report import tree
    big = len(messages) >= PROGRESS_POINTS
    if big:
        _progress("%s points read in %.1f s; building the report"
                  % (format(len(messages), ","), time.monotonic() - started))
    report = tree.build(messages)
    if big:
        _progress("report built in %.1f s; writing it"
                  % (time.monotonic() - started))
    return report


def _progress(line):
    print("%s: %s" % (PROG, line), file=sys.stderr, flush=True)


def _close(driver, timeout=DEFAULT_TIMEOUT):
    try:
        within(min(timeout, 2.0), "closing the store", driver.close)
    except Exception:  # closing must not hide the real outcome
        logging.getLogger(__name__).debug("close failed", exc_info=True)


def _looks_like_path(target):
    return (os.sep in target or target.endswith((".json", ".jsonl"))
            or target.startswith("."))


# commands

def report_of(target, args):
    """The report of a file, or of a trace in the store."""
    if os.path.exists(target):
        return report_from_file(target)
    if _looks_like_path(target):
        raise CLIError("no such file: %s" % target)
    return report_from_store(target, args)


def cmd_trace_show(args):
    from stacktrail.report import tree
    # reading, building and rendering a big trace make objects by the
    # hundred thousand and free none of them until the end
    if getattr(args, "console", False):
        # The process ends once the report is written (``_exit_keeping``):
        # the collector stays off, since turning it back on would first
        # scan everything made meanwhile (a tenth of a big show).
        gc.disable()
        return _trace_show(args)
    with tree.gc_paused():
        return _trace_show(args)


def _trace_show(args):
    other = getattr(args, "compare", None)
    if other and args.format != "html":
        raise CLIError("--compare works with --html only")
    report = report_of(args.target, args)
    # Kept until the process ends: see _exit_keeping.
    args.kept = report
    show_noise = getattr(args, "show_noise", False)
    if other:
        from stacktrail.report import html
        output = html.render(report, show_noise=show_noise,
                             other=report_of(other, args))
    elif args.format == "json":
        # Written as it is made: a million-point report's text (a GB and
        # more) is never held whole.
        from stacktrail.report import as_json
        _write_with(lambda write: as_json.render(
            report, show_noise=show_noise, out=write), args.out)
        return 0
    else:
        output = render_report(report, args.format, show_noise=show_noise)
    _write(output, args.out)
    return 0


def cmd_trace_headers(args):
    """Headers that start a trace, for a request made by hand (curl)."""
    from stacktrail import profiler
    from stacktrail import web
    from stacktrail.common import signing
    key = args.hmac_key or os.environ.get(ENV_HMAC_KEY)
    if not key and args.config_file:
        keys = signing.split_keys(
            load_config(args.config_file).profiler.hmac_keys)
        key = keys[0] if keys else None
    if not key:
        raise CLIError("no HMAC key: give --hmac-key, $%s or a "
                       "--config-file with [profiler] hmac_keys"
                       % ENV_HMAC_KEY)
    prof = profiler.init(key)
    try:
        trace_id, headers = prof.get_base_id(), web.get_trace_id_headers()
    finally:
        profiler.clean()
    if args.json:
        _write(json.dumps({"id": trace_id, "headers": headers}, indent=2)
               + "\n", None)
    else:
        # One "Name: value" a line, what ``curl -H @FILE`` reads; the id
        # on stderr, so that redirecting stdout keeps only the headers.
        _write("".join("%s: %s\n" % item for item in headers.items()), None)
        print("trace id: %s  (stacktrail trace show %s)" % (
            trace_id, trace_id), file=sys.stderr)
    return 0


def cmd_trace_list(args):
    since_us, until_us, min_us = _list_bounds(args)
    driver, where = open_driver(args)
    try:
        traces = within(args.timeout, "the trace store %s" % where,
                        driver.trace_summaries, since_us, until_us)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError("cannot list traces in %s: %s" % (
            where, logtext.one_line(exc, with_type=False))) from None
    finally:
        _close(driver, args.timeout)
    _warn_skipped(driver)
    traces = [t for t in traces
              if (not args.errors or t["error"])
              and (args.service is None or args.service in t["services"])
              and t["duration_ms"] * 1000 >= min_us]
    key = "duration_ms" if args.sort == "duration" else "timestamp"
    traces.sort(key=lambda t: (t[key], t["base_id"]), reverse=True)
    if args.limit is not None:
        traces = traces[:args.limit]
    if args.format == "json":
        _write(json.dumps(traces, indent=2, default=str) + "\n", None)
    elif traces:
        _write(_trace_table(traces), None)
    else:
        _write("no %straces in %s\n" % ("error " if args.errors else "",
                                        where), None)
    return 0


def _list_bounds(args):
    """(since_us, until_us, min_duration_us) of ``trace list``'s options."""
    from stacktrail.report import aggregate

    now_us = int(time.time() * 1_000_000)

    def moment(text):
        ago = aggregate.parse_duration(text)   # "1h": an hour ago
        return now_us - ago if ago is not None else aggregate.parse_time(
            text, now_us)

    try:
        since = moment(args.since) if args.since else None
        until = moment(args.until) if args.until else None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    least = 0
    if args.min_duration:
        least = aggregate.parse_duration(args.min_duration)
        if least is None:
            raise CLIError("not a duration: %r (e.g. 250ms, 2s, 1m)"
                           % args.min_duration)
    return since, until, least


def _trace_table(traces):
    """One line per trace; ``!`` marks one that recorded an error."""
    from stacktrail.report.text import clean
    from stacktrail.report.text import fmt_us
    rows = [("START (UTC)", "DURATION", "SPANS", "", "SERVICES", "NAME",
             "BASE_ID")]
    for t in traces:
        rows.append((clean(t["timestamp"]).replace("T", " "),
                     fmt_us(round(t["duration_ms"] * 1000)), str(t["spans"]),
                     "!" if t["error"] else "",
                     clean(",".join(t["services"])) or "-",
                     clean(t["name"]) or "?", clean(t["base_id"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = (False, True, True, False, False, False, False)
    lines = ["  ".join(cell.rjust(w) if r else cell.ljust(w)
                       for cell, w, r in zip(row, widths, right)).rstrip()
             for row in rows]
    return "\n".join(lines) + "\n"


AGENT_COMMANDS = {"status": "stacktrail.agent.status",
                  "install-unit": "stacktrail.agent.unit"}


def cmd_agent(args, extra):
    """Delegate ``agent <command>`` to its module (AGENT_COMMANDS), imported
    only when asked for."""
    import importlib
    name = args.agent_command
    try:
        module = importlib.import_module(AGENT_COMMANDS[name])
    except ImportError as exc:
        raise CLIError("agent %s is not available: %s" % (
            name, logtext.one_line(exc, with_type=False))) from None
    parser = argparse.ArgumentParser(prog="%s agent %s" % (PROG, name))
    module.add_arguments(parser)
    agent_args = parser.parse_args(extra)
    if getattr(agent_args, "config_file", None) is None and args.config_file:
        agent_args.config_file = list(args.config_file)
    try:
        return module.run(agent_args)
    except (ValueError, OSError) as exc:
        raise CLIError(logtext.one_line(exc, with_type=False)) from None


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


# analyze

def render_report(report, fmt, show_noise=False):
    """One trace's report in ``fmt``, with the renderers' options."""
    import importlib
    from stacktrail import report as reports
    if fmt not in reports.FORMATS:
        return reports.render(report, fmt)   # its error for a bad format
    module = importlib.import_module("stacktrail.report.%s" % (
        "as_json" if fmt == "json" else fmt))
    return module.render(report, show_noise=show_noise)


def worker_driver(conn_str, config_files, timeout, debug=False):
    """A driver for a worker process of ``analyze`` (its own connection)."""
    if not debug:
        _configure_logging(False)
    conf = load_config(config_files) if config_files else None
    return get_driver(conn_str, conf, timeout)


class Progress:
    """The progress lines of ``analyze`` on stderr: rewritten in place on a
    terminal, a line every few seconds otherwise, and a last line for each
    window."""

    def __init__(self, quiet=False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = {}

    def __call__(self, label, state, final=False):
        if self.quiet:
            return
        now = state["elapsed"]
        if not final and now - self.last.get(label, 0.0) < (
                0.2 if self.tty else 5.0):
            return
        self.last[label] = now
        rate = state["read"] / now if now > 0 else 0
        line = "%s: %s: %s/%s traces read (%.0f/s), %s matched, %.1f s" % (
            PROG, label, format(state["read"], ","),
            format(state["total"], ","), rate,
            format(state["matched"], ","), now)
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def cmd_analyze(args):
    import functools
    from stacktrail.report import aggregate

    try:
        window = (aggregate.parse_window(args.window) if args.window
                  else aggregate.Window())
        baseline = (aggregate.parse_window(args.baseline, relative_to=window)
                    if args.baseline else None)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.rank != "mean" and baseline is None:
        raise CLIError("--rank needs --baseline")
    trace_filter = aggregate.Filter(root=args.root, service=args.service,
                                    error=args.error)
    driver, where = open_driver(args)
    try:
        try:
            listing = within(args.timeout, "the trace store %s" % where,
                             driver.list_traces)
        except CLIError:
            raise
        except Exception as exc:
            raise CLIError("cannot list traces in %s: %s" % (
                where, logtext.one_line(exc, with_type=False))) from None
        chosen = aggregate.select(listing, window)
        before = aggregate.select(listing, baseline) if baseline else []
        del listing
        if not chosen:
            raise CLIError("no trace in %s started in %s"
                           % (where, window.describe()))
        if baseline is not None and not before:
            raise CLIError("no trace in %s started in the baseline %s"
                           % (where, baseline.describe()))
        conf = load_config(args.config_file) if args.config_file else None
        opener = functools.partial(worker_driver,
                                   connection_string(args, conf),
                                   list(args.config_file or ()),
                                   args.timeout, args.debug)
        jobs = args.jobs or aggregate.default_jobs(len(chosen) + len(before))
        scan = aggregate.Scan(opener, jobs=jobs,
                              progress=Progress(args.quiet))
        wanted = [("window", chosen)]
        if baseline is not None:
            wanted.append(("baseline", before))
        try:
            runs = dict(zip(("window", "baseline"),
                            scan.run(wanted, trace_filter, driver=driver)))
        except CLIError:
            raise
        except Exception as exc:
            raise CLIError("cannot read traces from %s: %s" % (
                where, logtext.one_line(exc, with_type=False))) from None
        driver_skipped = getattr(driver, "skipped", None)
        if isinstance(driver_skipped, list):
            driver_skipped.extend(s for s in scan.skipped
                                  if s not in driver_skipped)
    finally:
        _close(driver, args.timeout)
    _warn_skipped(driver)
    stats, state = runs["window"]
    if not stats.count:
        raise CLIError("none of the %d traces started in %s matches %s"
                       % (len(chosen), window.describe(),
                          trace_filter.describe()))
    before_stats, before_state = runs.get("baseline", (None, None))
    if before_stats is not None and not before_stats.count:
        raise CLIError("none of the %d traces of the baseline %s matches %s"
                       % (len(before), baseline.describe(),
                          trace_filter.describe()))
    answer = aggregate.result(stats, window, trace_filter, state,
                              before_stats, baseline, before_state,
                              rank=args.rank, source=where)
    if args.format == "json":
        from stacktrail.report import as_json
        output = as_json.dumps_deep(answer, indent=2) + "\n"
    elif args.format == "html":
        from stacktrail.report import html
        output = html.render_analysis(answer)
    else:
        from stacktrail.report import text
        output = text.render_analysis(answer)
    _write(output, args.out)
    return 0


def _write(output, path):
    _write_with(lambda write: write(output), path)


def _write_with(produce, path):
    """``produce(write)`` writes the output to ``path`` (stdout: None)."""
    if path is None:
        produce(sys.stdout.write)
        sys.stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            produce(f.write)
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
                                          metavar="{show,list,headers}")
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
    show.add_argument("--show-noise", action="store_true",
                      help="also show transaction statements (BEGIN, "
                           "COMMIT, ROLLBACK) and pings, which are folded "
                           "into their neighbours' time otherwise")
    show.add_argument("--compare", metavar="BASE_ID|FILE",
                      help="with --html: compare with a second trace (what "
                           "got slower, per service and span kind)")
    _store_options(show)

    listing = trace_commands.add_parser(
        "list", help="list stored traces",
        description="One line per trace: when it began, how long it took, "
                    "its span count, ! if it recorded an error, the "
                    "services it touched and its root span's name.")
    listing.add_argument("--since", metavar="TIME",
                         help="traces that began at or after TIME (ISO 8601"
                              " UTC, or a duration ago: 15m, 2h, 1d)")
    listing.add_argument("--until", metavar="TIME",
                         help="traces that began before TIME")
    listing.add_argument("--service", metavar="NAME",
                         help="traces that touched this service")
    listing.add_argument("--min-duration", metavar="DURATION",
                         help="traces that took at least DURATION "
                              "(250ms, 2s)")
    listing.add_argument("--errors", "--error-trace", dest="errors",
                         action="store_true",
                         help="only traces that recorded an error")
    listing.add_argument("--sort", choices=("start", "duration"),
                         default="start",
                         help="newest first (start, the default) or "
                              "slowest first (duration)")
    listing.add_argument("--limit", type=_positive, metavar="N",
                         help="only the first N after sorting")
    listing.add_argument("--format", choices=("table", "json"),
                         default="table", help="a table (the default) or "
                                               "JSON with the same fields")
    listing.add_argument("--json", dest="format", action="store_const",
                         const="json", help="same as --format json")
    listing.set_defaults(func=cmd_trace_list)
    _store_options(listing)

    headers = trace_commands.add_parser(
        "headers", help="headers that start a trace, for curl",
        description="Print the headers that make a service trace a request "
                    "(osprofiler's signed X-Trace-Info/X-Trace-HMAC and W3C "
                    "traceparent), one 'Name: value' a line, and the new "
                    "trace's id on stderr: stacktrail trace headers > h; "
                    "curl -H @h URL; stacktrail trace show ID.")
    headers.add_argument("--hmac-key", metavar="KEY",
                         help="one of the services' [profiler] hmac_keys "
                              "(default: $%s, then the first of "
                              "--config-file's)" % ENV_HMAC_KEY)
    headers.add_argument("--json", action="store_true",
                         help="the id and the headers as JSON")
    headers.add_argument("--config-file", action="append",
                         default=argparse.SUPPRESS, metavar="FILE",
                         help=argparse.SUPPRESS)
    headers.set_defaults(func=cmd_trace_headers)

    _analyze_parser(commands)
    _sampling_parser(commands)

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
                                          metavar="{status,install-unit}")
    agent_commands.required = True
    agent_commands.add_parser(
        "status", add_help=False,
        help="ask the local agent for its status (options: see "
             "`stacktrail agent status --help`)")
    agent_commands.add_parser(
        "install-unit", add_help=False,
        help="write the agent's systemd unit for this install (options: "
             "see `stacktrail agent install-unit --help`)")
    return parser


def _analyze_parser(commands):
    analyze = commands.add_parser(
        "analyze", help="latency and where it went, across many traces",
        description="Read the traces of a time window and report their "
                    "latency (p50, p90, p99) and, per service and span "
                    "kind, the share of the critical path it held them up "
                    "for; with --baseline, what changed since another "
                    "window, ranked by contribution to the difference.  "
                    "WINDOW: 1h (the last hour), START/END, START/1h or "
                    "1h/END, with ISO 8601 times in UTC "
                    "(2024-05-01T10:00); a baseline may also be -1d (the "
                    "window one day earlier).")
    analyze.add_argument("--window", metavar="WINDOW",
                         help="traces that started in WINDOW (default: "
                              "every trace in the store)")
    analyze.add_argument("--baseline", metavar="WINDOW",
                         help="compare with the traces of this window")
    analyze.add_argument("--root", metavar="PATTERN",
                         help="only traces whose first span matches, e.g. "
                              "'POST /v3/volumes' (a substring) or "
                              "'wsgi GET /v2.1/servers/*' (a glob)")
    analyze.add_argument("--service", metavar="NAME",
                         help="only traces with a span of this service")
    errors = analyze.add_mutually_exclusive_group()
    errors.add_argument("--error", dest="error", action="store_const",
                        const=True, help="only traces with an error")
    errors.add_argument("--no-error", dest="error", action="store_const",
                        const=False, help="only traces without errors")
    analyze.add_argument("--rank", choices=("mean", "p50", "p90", "p99"),
                         default="mean",
                         help="with --baseline: rank the changes by their "
                              "part in the change of the mean latency "
                              "(default) or of the latency of the traces "
                              "at a percentile")
    formats = analyze.add_mutually_exclusive_group()
    for fmt, help_text in (
            ("text", "a text summary (default)"),
            ("json", "every number as JSON"),
            ("html", "one self-contained HTML page with plots")):
        formats.add_argument("--" + fmt, dest="format", action="store_const",
                             const=fmt, help=help_text)
    analyze.add_argument("--out", metavar="FILE",
                         help="write to FILE instead of stdout")
    analyze.add_argument("--jobs", type=_positive, metavar="N",
                         help="worker processes reading the store "
                              "(default: up to 4, one for small windows)")
    analyze.add_argument("--quiet", action="store_true",
                         help="no progress line on stderr")
    analyze.set_defaults(format="text", func=cmd_analyze, error=None)
    _store_options(analyze)


def _sampling_parser(commands):
    from stacktrail.cmd import sampling
    sampling.add_arguments(commands, cmd_sampling)


def cmd_sampling(args):
    """``stacktrail sampling show|set``: stacktrail.cmd.sampling."""
    from stacktrail.cmd import sampling
    try:
        return sampling.run(args)
    except sampling.SamplingError as exc:
        raise CLIError(str(exc)) from None


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
    agent_command = args.command == "agent"
    if extra and not agent_command:
        parser.error("unrecognized arguments: %s" % " ".join(extra))
    if argv is None:
        _configure_logging(args.debug)
    try:
        if agent_command:
            return cmd_agent(args, extra)
        # A profiler or coverage tracer must see the end: not for them.
        args.console = argv is None and sys.getprofile() is None and \
            sys.gettrace() is None
        code = args.func(args)
        if args.console and getattr(args, "kept", None) is not None:
            _exit_keeping(code)
        return code
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
                                     logtext.one_line(exc, with_type=False)),
              file=sys.stderr)
    return 1


def _exit_keeping(code):
    """End the console command now, its output flushed, without freeing
    what it kept.

    A report is millions of small objects; freeing them one by one at
    exit costs about a tenth of a big ``trace show`` (counted with
    callgrind), and the system takes a process's memory back at once.
    Nothing of the command is left to run: it has written its output.
    Not under a profiler or a coverage tracer, which write their results
    at exit.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = 1
    finally:
        sys.stderr.flush()
        logging.shutdown()
    os._exit(int(code or 0))


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
