#!/usr/bin/env python3
"""Save every trace of a run: an offline HTML report and the JSON report of
each, and an index page listing them with their duration and errors.

    save_traces.py --out DIR [--cli PATH] [--config-file F]
                   [--connection-string S] [--limit N]

Reads the store through the ``stacktrail`` command (``trace list --json``,
``trace list --error-trace --json``, ``trace show ID --json/--html``), so it
needs nothing but Python 3's standard library where it runs.  Writes
``DIR/<id>.html``, ``DIR/<id>.json``, ``DIR/index.html`` and
``DIR/index.json``.  A trace that cannot be read is listed with the reason;
the exit status is 0 unless the store could not be listed at all.
"""

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
TIMEOUT = 300


class CommandFailed(Exception):
    pass


def find_cli(candidates):
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("stacktrail")
    if found:
        return found
    raise CommandFailed("no stacktrail command found (tried %s)"
                        % ", ".join(c for c in candidates if c))


def run_cli(args, cli, *command):
    argv = [cli]
    for path in args.config_file or []:
        argv += ["--config-file", path]
    argv += list(command)
    if args.connection_string and command[:1] == ("trace",):
        argv += ["--connection-string", args.connection_string]
    proc = subprocess.run(argv, capture_output=True, text=True,
                          timeout=TIMEOUT)
    if proc.returncode:
        raise CommandFailed((proc.stderr or proc.stdout).strip()
                            .splitlines()[-1:] or ["exit %d"
                                                   % proc.returncode])
    return proc.stdout


def list_traces(args, cli):
    listed = json.loads(run_cli(args, cli, "trace", "list", "--json",
                                *(["--limit", str(args.limit)]
                                  if args.limit else [])))
    try:
        errors = json.loads(run_cli(args, cli, "trace", "list",
                                    "--error-trace", "--json"))
    except (CommandFailed, ValueError):
        errors = []
    return listed, {t.get("base_id") for t in errors}


def summary(base_id, timestamp, report, marked_error):
    info = report.get("info", {})
    roots = report.get("children") or []
    first = roots[0].get("info", {}) if roots else {}
    duration_us = info.get("duration_us")
    if duration_us is None and info.get("finished") is not None:
        duration_us = int(info["finished"]) * 1000
    return {
        "base_id": base_id,
        "started_at": info.get("started_at") or str(timestamp or ""),
        "duration_ms": None if duration_us is None else duration_us / 1000.0,
        "spans": info.get("span_count"),
        "errors": int(info.get("error_count") or 0),
        "error_trace": marked_error,
        "open": int(info.get("open_count") or 0),
        "services": info.get("services") or [],
        "first": ("%s %s" % (first.get("name", ""),
                             first.get("detail", ""))).strip(),
        "html": "%s.html" % base_id,
        "json": "%s.json" % base_id,
    }


def save(args):
    cli = find_cli(args.cli)
    os.makedirs(args.out, exist_ok=True)
    listed, error_ids = list_traces(args, cli)
    rows = []
    for entry in listed:
        base_id = str(entry.get("base_id", ""))
        if not SAFE_ID.match(base_id):
            continue            # never a path from the store
        json_path = os.path.join(args.out, base_id + ".json")
        html_path = os.path.join(args.out, base_id + ".html")
        try:
            run_cli(args, cli, "trace", "show", base_id, "--json",
                    "--out", json_path)
            run_cli(args, cli, "trace", "show", base_id, "--html",
                    "--out", html_path)
            with open(json_path, encoding="utf-8") as f:
                report = json.load(f)
            rows.append(summary(base_id, entry.get("timestamp"), report,
                                base_id in error_ids))
        except (CommandFailed, ValueError, OSError) as exc:
            rows.append({"base_id": base_id, "failed": str(exc),
                         "started_at": str(entry.get("timestamp") or ""),
                         "error_trace": base_id in error_ids})
    rows.sort(key=lambda r: r.get("started_at") or "")
    with open(os.path.join(args.out, "index.json"), "w",
              encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(args.out, "index.html"), "w",
              encoding="utf-8") as f:
        f.write(index_page(rows))
    return rows


STYLE = """
body { font: 14px sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.error td { background: #fde8e8; }
code { font-size: 12px; }
"""


def index_page(rows):
    esc = html.escape
    traced = [r for r in rows if "failed" not in r]
    with_errors = [r for r in traced if r["errors"] or r["error_trace"]]
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src '
        "'none'; style-src 'unsafe-inline'\">",
        "<title>stacktrail: traces of this run</title>",
        "<style>%s</style></head><body>" % STYLE,
        "<h1>Traces of this run</h1>",
        "<p>%d traces, %d with errors.  Each opens offline (HTML) or as "
        "JSON (<code>stacktrail trace show FILE</code>).</p>"
        % (len(rows), len(with_errors)),
        "<table><thead><tr><th>started</th><th>trace</th><th>first span"
        "</th><th>duration (ms)</th><th>spans</th><th>errors</th>"
        "<th>open</th><th>services</th></tr></thead><tbody>",
    ]
    for row in rows:
        if "failed" in row:
            lines.append(
                '<tr class="error"><td>%s</td><td><code>%s</code></td>'
                '<td colspan="6">not saved: %s</td></tr>'
                % (esc(row["started_at"]), esc(row["base_id"]),
                   esc(row["failed"])))
            continue
        duration = "" if row["duration_ms"] is None else \
            "%.1f" % row["duration_ms"]
        errors = str(row["errors"])
        if row["error_trace"] and not row["errors"]:
            errors = "marked"
        lines.append(
            '<tr%s><td>%s</td><td><a href="%s"><code>%s</code></a> '
            '(<a href="%s">json</a>)</td><td>%s</td><td class="num">%s</td>'
            '<td class="num">%s</td><td class="num">%s</td>'
            '<td class="num">%s</td><td>%s</td></tr>'
            % (' class="error"' if row["errors"] or row["error_trace"]
               else "",
               esc(row["started_at"]), esc(row["html"]), esc(row["base_id"]),
               esc(row["json"]), esc(row["first"]), duration,
               esc(str(row["spans"])), esc(errors), row["open"],
               esc(", ".join(row["services"]))))
    lines += ["</tbody></table>", "</body></html>", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cli", action="append", default=[],
                        help="stacktrail command (first one that exists; "
                             "default: stacktrail on PATH)")
    parser.add_argument("--config-file", action="append", default=[])
    parser.add_argument("--connection-string")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    try:
        rows = save(args)
    except (CommandFailed, ValueError, OSError,
            subprocess.TimeoutExpired) as exc:
        print("save_traces: %s" % exc, file=sys.stderr)
        return 1
    print("save_traces: %d traces saved in %s" % (len(rows), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
