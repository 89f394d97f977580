"""Trace reports: the tree and its analyses, and renderers for people.

``build(messages)`` makes the report (osprofiler's structure plus critical
path and self time); ``render(report, fmt)`` turns it into text, json,
html or dot.
"""

from stacktrail.report.tree import build

__all__ = ["FORMATS", "build", "render"]

FORMATS = ("text", "json", "html", "dot")


def render(report, fmt="text"):
    """The report as text in one of FORMATS."""
    if fmt == "text":
        from stacktrail.report import text as module
    elif fmt == "json":
        from stacktrail.report import as_json as module
    elif fmt == "html":
        from stacktrail.report import html as module
    elif fmt == "dot":
        from stacktrail.report import dot as module
    else:
        raise ValueError("unknown report format %r (one of %s)"
                         % (fmt, ", ".join(FORMATS)))
    return module.render(report)
