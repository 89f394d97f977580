/* stacktrail analyze: plots and tables of many traces, no dependencies.
 *
 * Every piece of data reaches the page through textContent or an
 * attribute set from script, never through HTML parsing, so service and
 * span names cannot inject markup.  The plots are SVG built here.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("stacktrail-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#5b8def", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085",
                "#d35400", "#2c3e50", "#f1c40f", "#7f8c8d", "#e84393", "#00b894"];
  var BANDS = ["p50", "p90", "p99"];

  function num(value, fallback) {
    return typeof value === "number" && isFinite(value) ? value : fallback;
  }
  function fmt(us) {
    if (us === null || us === undefined || !isFinite(us)) { return "-"; }
    if (Math.abs(us) < 50) { us = 0; }  /* shown as 0.0 ms: no sign */
    var a = Math.abs(us);
    if (a >= 1e7) { return (us / 1e6).toFixed(2) + " s"; }
    if (a >= 1e5) { return (us / 1000).toFixed(0) + " ms"; }
    return (us / 1000).toFixed(1) + " ms";
  }
  function signed(us) {
    if (us === null || us === undefined) { return "-"; }
    return (us >= 50 ? "+" : "") + fmt(us);
  }
  function pct(x) {
    return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%";
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function tip(node, text) { node.appendChild(svg("title", {}, text)); return node; }
  function label(row) {
    return (row.service || "(no service)") + " \u00b7 " + row.kind;
  }
  function table(id, header, rows, textColumns) {
    var t = document.getElementById(id);
    t.replaceChildren();
    var tr = el("tr");
    header.forEach(function (h, i) {
      tr.appendChild(el("th", i < textColumns ? "text" : "", h));
    });
    t.appendChild(tr);
    rows.forEach(function (row) {
      var line = el("tr");
      row.forEach(function (cell, i) { line.appendChild(el("td", i < textColumns ? "text" : "", cell)); });
      t.appendChild(line);
    });
  }

  function summary() {
    var t = data.traces || {};
    var title = "stacktrail analyze" + (data.source ? ": " + data.source : "");
    document.title = title;
    document.getElementById("title").textContent = title;
    var box = document.getElementById("summary");
    box.appendChild(el("div", "", "Window " + data.window.description + ": " + t.matched +
      " traces matched of " + t.read + " read (" + data.filter.description + ")" +
      (t.errors ? ", " + t.errors + " with errors" : "")));
    if (data.baseline) {
      box.appendChild(el("div", "", "Baseline " + data.baseline.window.description + ": " +
        data.baseline.traces.matched + " traces matched of " + data.baseline.traces.read + " read"));
    }
  }

  function latency() {
    var rows = [];
    [["end to end", "end_to_end"], ["response", "response"]].forEach(function (pair) {
      var n = data.latency[pair[1]];
      rows.push([pair[0], data.baseline ? "now" : "", fmt(n.p50_us), fmt(n.p90_us), fmt(n.p99_us),
                 fmt(n.mean_us), fmt(n.max_us)]);
      if (data.baseline) {
        var b = data.baseline.latency[pair[1]];
        rows.push(["", "baseline", fmt(b.p50_us), fmt(b.p90_us), fmt(b.p99_us), fmt(b.mean_us), fmt(b.max_us)]);
        var c = data.latency_change[pair[1]];
        rows.push(["", "change", signed(c.p50_us.change), signed(c.p90_us.change),
                   signed(c.p99_us.change), signed(c.mean_us.change), ""]);
      }
    });
    table("latency", ["", "", "p50", "p90", "p99", "mean", "max"], rows, 2);
  }

  function histogram() {
    var h = data.histogram || {};
    var edges = h.edges_us || [];
    var plot = document.getElementById("histogram");
    var W = 900, H = 220, left = 40, right = 10, top = 10, bottom = 36;
    plot.setAttribute("viewBox", "0 0 " + W + " " + H);
    if (edges.length < 2) { return; }
    var series = [h.window || []];
    if (h.baseline) { series.push(h.baseline); }
    var peak = 1;
    series.forEach(function (s) { s.forEach(function (c) { peak = Math.max(peak, c); }); });
    var lo = Math.log(edges[0]), hi = Math.log(edges[edges.length - 1]);
    function x(us) { return left + (Math.log(Math.max(us, edges[0])) - lo) / (hi - lo) * (W - left - right); }
    function y(c) { return top + (1 - c / peak) * (H - top - bottom); }
    plot.appendChild(svg("line", {x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, "class": "axis"}));
    plot.appendChild(svg("line", {x1: left, y1: top, x2: left, y2: H - bottom, "class": "axis"}));
    plot.appendChild(svg("text", {x: 4, y: top + 10}, peak));
    (h.window || []).forEach(function (c, i) {
      if (!c) { return; }
      var bar = svg("rect", {x: x(edges[i]) + 0.5, y: y(c), width: Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1),
                             height: H - bottom - y(c), "class": "bar-window"});
      plot.appendChild(tip(bar, fmt(edges[i]) + " \u2013 " + fmt(edges[i + 1]) + ": " + c + " traces"));
    });
    if (h.baseline) {
      var path = "";
      h.baseline.forEach(function (c, i) {
        path += (i ? " L" : "M") + x(edges[i]) + " " + y(c) + " L" + x(edges[i + 1]) + " " + y(c);
      });
      plot.appendChild(tip(svg("path", {d: path, "class": "bar-baseline"}), "baseline"));
    }
    var ticks = 6;
    for (var t = 0; t <= ticks; t++) {
      var us = Math.exp(lo + (hi - lo) * t / ticks);
      plot.appendChild(svg("text", {x: x(us), y: H - bottom + 14,
                                    "text-anchor": t === 0 ? "start" : (t === ticks ? "end" : "middle")}, fmt(us)));
    }
    BANDS.forEach(function (p) {
      var value = data.latency.end_to_end[p + "_us"];
      if (value === null || value === undefined) { return; }
      var at = x(value);
      plot.appendChild(tip(svg("line", {x1: at, y1: top, x2: at, y2: H - bottom, "class": "pmark"}), p + " " + fmt(value)));
      // Near the right edge the label goes left of its mark: never cut.
      var leftward = at > W - right - 90;
      plot.appendChild(svg("text", {x: leftward ? at - 3 : at + 3, y: H - bottom + 28, "class": "pmark-label",
                                    "text-anchor": leftward ? "end" : "start"}, p + " " + fmt(value)));
    });
    document.getElementById("histogram-caption").textContent =
      "End-to-end time of each trace (log scale), " + (data.traces.matched) + " traces" +
      (h.baseline ? "; the orange line is the baseline." : ".");
  }

  function shares() {
    var groups = (data.groups || []).slice(0, COLORS.length - 1);
    var rest = (data.groups || []).slice(COLORS.length - 1);
    var plot = document.getElementById("shares");
    var rows = [["all traces", function (g) { return g.share; }]];
    BANDS.forEach(function (b) {
      rows.push(["at " + b, function (g) { return g.at[b].share; }]);
    });
    var W = 900, rowH = 28, left = 90, right = 10, H = rows.length * rowH + 10;
    plot.setAttribute("viewBox", "0 0 " + W + " " + H);
    rows.forEach(function (row, r) {
      var yy = 5 + r * rowH;
      plot.appendChild(svg("text", {x: 4, y: yy + 16}, row[0]));
      var at = left;
      groups.forEach(function (g, i) {
        var share = num(row[1](g), 0);
        var width = share * (W - left - right);
        if (width <= 0) { return; }
        var seg = svg("rect", {x: at, y: yy, width: width, height: rowH - 8, fill: COLORS[i],
                               "class": "segment", "data-group": label(g)});
        plot.appendChild(tip(seg, label(g) + ": " + pct(share) + " (" + row[0] + ")"));
        at += width;
      });
      var other = 0;
      rest.forEach(function (g) { other += num(row[1](g), 0); });
      if (other > 0) {
        var seg = svg("rect", {x: at, y: yy, width: other * (W - left - right), height: rowH - 8,
                               fill: COLORS[COLORS.length - 1], "class": "segment", "data-group": "(rest)"});
        plot.appendChild(tip(seg, rest.length + " more: " + pct(other)));
      }
    });
    var legend = document.getElementById("legend");
    groups.forEach(function (g, i) {
      var item = el("span");
      var swatch = el("span", "swatch");
      swatch.style.background = COLORS[i];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(label(g)));
      legend.appendChild(item);
    });
    table("groups", ["service", "kind", "all", "at p50", "at p90", "at p99", "mean/trace", "p50/trace", "p99/trace"],
      (data.groups || []).map(function (g) {
        return [g.service || "(no service)", g.kind, pct(g.share), pct(g.at.p50.share), pct(g.at.p90.share),
                pct(g.at.p99.share), fmt(g.mean_us), fmt(g.p50_us), fmt(g.p99_us)];
      }), 2);
  }

  function changes() {
    if (!data.baseline) { return; }
    document.getElementById("changes-section").hidden = false;
    var rank = data.rank || "mean";
    var all = data.changes || [];
    var shown = all.filter(function (c) { return c.rank_change_us !== 0; }).slice(0, 15);
    document.getElementById("changes-caption").textContent =
      "Each service and span kind's part in the change of the " +
      (rank === "mean" ? "mean end-to-end time" : "end-to-end time of the traces at " + rank) +
      " (" + signed(data.latency_change.change_ranked_us) + "), largest first.";
    var plot = document.getElementById("changes");
    var W = 900, rowH = 22, labelW = 300, H = Math.max(1, shown.length) * rowH + 10;
    plot.setAttribute("viewBox", "0 0 " + W + " " + H);
    var peak = 1;
    shown.forEach(function (c) { peak = Math.max(peak, Math.abs(c.rank_change_us)); });
    var mid = labelW + (W - labelW) / 2, half = (W - labelW) / 2 - 70;
    plot.appendChild(svg("line", {x1: mid, y1: 0, x2: mid, y2: H, "class": "axis"}));
    shown.forEach(function (c, r) {
      var yy = 5 + r * rowH;
      var width = Math.abs(c.rank_change_us) / peak * half;
      var up = c.rank_change_us > 0;
      plot.appendChild(svg("text", {x: 4, y: yy + 13}, label(c)));
      var bar = svg("rect", {x: up ? mid : mid - width, y: yy, width: Math.max(1, width), height: rowH - 6,
                             "class": "change " + (up ? "up" : "down"), "data-group": label(c)});
      plot.appendChild(tip(bar, label(c) + ": " + signed(c.rank_change_us) +
                              (c.share_of_change !== null ? " (" + pct(c.share_of_change) + " of the change)" : "")));
      plot.appendChild(svg("text", {x: up ? mid + width + 4 : mid - width - 4, y: yy + 13,
                                    "text-anchor": up ? "start" : "end"}, signed(c.rank_change_us)));
    });
    table("changes-table", ["service", "kind", "before", "now", "change", "of change", "at p50", "at p90", "at p99"],
      all.slice(0, 40).map(function (c) {
        return [c.service || "(no service)", c.kind, fmt(c.before_us), fmt(c.after_us), signed(c.change_us),
                pct(c.share_of_change), signed(c.at.p50.change_us), signed(c.at.p90.change_us),
                signed(c.at.p99.change_us)];
      }), 2);
  }

  function lists() {
    table("operations", ["operation", "traces"], (data.operations || []).slice(0, 30).map(function (o) {
      return [o.operation, o.count];
    }), 1);
    table("slowest", ["trace (stacktrail trace show ID)", "end to end"], (data.slowest || []).map(function (s) {
      return [s.base_id, fmt(s.end_to_end_us)];
    }), 1);
  }

  summary();
  latency();
  histogram();
  shares();
  changes();
  lists();
  document.body.setAttribute("data-rendered", "analysis");
}());
