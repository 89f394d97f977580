"""The report as a Graphviz digraph: one box per span (its name, what it
did, duration, where), edges parent to child, the critical path drawn bold
red and errors filled.  An edge to a span that started after its parent
had returned (an RPC cast served later) is dashed.  The title gives the
end-to-end time beside the response time; transaction statements and
pings are left out unless ``show_noise``.

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
    return quote("\n".join(map(text.clean, lines)))


def _attrs(info):
    attrs = ["label=%s" % _label(info)]
    if info.get("critical"):
        attrs.append('color="#c0392b", penwidth=2.5')
    if info.get("error"):
        attrs.append('fillcolor="#f5b7b1"')
    if info.get("open"):
        attrs.append('style="rounded,filled,dashed"')
    return ", ".join(attrs)


def render(report, show_noise=False):
    text.ensure_analysis(report)
    info = report["info"]
    title = "trace %s: %s" % (info.get("base_id") or "?", text.timing(info))
    out = [
        "digraph trace {",
        "  graph [rankdir=LR, fontname=Helvetica, label=%s];"
        % quote(text.clean(title)),
        '  node [shape=box, style="rounded,filled", fillcolor=white, '
        "fontname=Helvetica];",
        "  root [label=%s, shape=oval];"
        % quote("total\n%s end to end\nresponse %s" % (
            text.fmt_us(info.get("end_to_end_us", info.get("finished_us"))),
            text.fmt_us(info.get("response_us")))),
    ]
    ids = {}
    shown = []
    for node, _ in analysis.walk(report):
        if text.hidden(node, show_noise):
            continue
        name = ids[id(node)] = "n%d" % len(ids)
        shown.append((name, node))
        out.append("  %s [%s];" % (name, _attrs(node["info"])))
    edges = [("root", None, child) for child in report.get("children", [])]
    for name, node in shown:
        edges.extend((name, node, child) for child in node["children"])
    for parent, parent_node, child in edges:
        if id(child) not in ids:
            continue
        style = []
        if child["info"].get("critical"):
            style.append('color="#c0392b", penwidth=2.5')
        if parent_node is not None and child["info"]["started_us"] > \
                parent_node["info"]["finished_us"]:
            style.append("style=dashed")
        out.append("  %s -> %s%s;" % (parent, ids[id(child)],
                                      " [%s]" % ", ".join(style)
                                      if style else ""))
    out.append("}")
    return "\n".join(out) + "\n"
