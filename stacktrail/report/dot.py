"""The report as a Graphviz digraph: one box per span (its name, what it
did, duration, where), edges parent to child, the critical path drawn bold
red and errors filled.

Node ids are generated (n0, n1, ...); span names and every other string
only appear inside quoted labels, escaped, so no name can inject DOT.
"""

from stacktrail.report import analysis
from stacktrail.report import text


def quote(value):
    """A DOT double-quoted string for any text."""
    out = str(value).replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\r", "").replace("\n", "\\n")
    return '"%s"' % out


def _label(info):
    lines = [info.get("name") or "?"]
    if info.get("detail"):
        lines.append(info["detail"])
    lines.append(text.fmt_us(info.get("duration_us")))
    place = text.where(info)
    if place:
        lines.append(place)
    if info.get("error"):
        lines.append("error: %s" % (info.get("error_message") or ""))
    if info.get("open"):
        lines.append("open: no stop recorded")
    # Join before quoting so the line breaks become DOT's \n escape.
    return quote("\n".join(text.clean(line) for line in lines))


def _attrs(info):
    attrs = ["label=%s" % _label(info)]
    if info.get("critical"):
        attrs.append('color="#c0392b", penwidth=2.5')
    if info.get("error"):
        attrs.append('fillcolor="#f5b7b1"')
    if info.get("open"):
        attrs.append('style="rounded,filled,dashed"')
    return ", ".join(attrs)


def render(report):
    text.ensure_analysis(report)
    info = report["info"]
    title = "trace %s, total %s" % (info.get("base_id") or "?",
                                    text.fmt_us(info.get("finished_us")))
    out = [
        "digraph trace {",
        "  graph [rankdir=LR, fontname=Helvetica, label=%s];"
        % quote(text.clean(title)),
        '  node [shape=box, style="rounded,filled", fillcolor=white, '
        "fontname=Helvetica];",
        "  root [label=%s, shape=oval];"
        % quote("total\n" + text.fmt_us(info.get("finished_us"))),
    ]
    ids = {}
    for node, _ in analysis.walk(report):
        name = ids[id(node)] = "n%d" % len(ids)
        out.append("  %s [%s];" % (name, _attrs(node["info"])))
    edges = [("root", child) for child in report.get("children", [])]
    for node, _ in analysis.walk(report):
        edges.extend((ids[id(node)], child) for child in node["children"])
    for parent, child in edges:
        style = (' [color="#c0392b", penwidth=2.5]'
                 if child["info"].get("critical") else "")
        out.append("  %s -> %s%s;" % (parent, ids[id(child)], style))
    out.append("}")
    return "\n".join(out) + "\n"
