"""The report as JSON (osprofiler's structure plus our keys)."""

import json


def render(report):
    # Raw payloads may hold what a store handed back (datetimes, bytes):
    # those become text rather than failing the whole report.
    return json.dumps(report, indent=2, default=str) + "\n"
