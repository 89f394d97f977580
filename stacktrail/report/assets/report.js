/* stacktrail trace report: an interactive waterfall, no dependencies.
 *
 * The report is read from the JSON data block of this page.  Every piece
 * of trace data reaches the page through textContent or a property, never
 * through HTML parsing, so span names and infos cannot inject markup.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("stacktrail-data").textContent);
  var info = data.info || {};
  var rows = [];          /* pre-order; a subtree is a contiguous slice */
  var rowsById = {};
  var view = { start: 0, end: 1 };
  var selected = null;
  var showNoise = document.body.getAttribute("data-show-noise") === "true";
  var lanes = document.getElementById("rows");
  var query = "";
  var matched = [];       /* the rows the filter found */
  /* One colour per service, in order of appearance; a legend names them. */
  var PALETTE = ["#5b8def", "#2ca58d", "#9b59b6", "#e1a100", "#17a2b8", "#7f8c8d",
                 "#8e6c3a", "#d35d9c", "#3d5a80", "#6a9f2a"];
  var serviceColour = {};

  function num(value, fallback) {
    return typeof value === "number" && isFinite(value) ? value : fallback;
  }
  function startUs(i) { return num(i.started_us, num(i.started, 0) * 1000); }
  function endUs(i) { return num(i.finished_us, num(i.finished, 0) * 1000); }
  function fmt(us) {
    if (Math.abs(us) >= 1e7) { return (us / 1e6).toFixed(3) + " s"; }
    return (us / 1000).toFixed(3) + " ms";
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  /* What the span did ("GET /v2/servers -> 200"), from the report. */
  function detail(i) {
    var d = i.detail;
    return d === undefined || d === null ? "" : String(d);
  }
  function named(i) {
    return String(i.name) + (detail(i) ? " " + detail(i) : "");
  }
  function where(i) {
    var parts = [];
    if (i.service) { parts.push(String(i.service)); }
    if (i.host) { parts.push(String(i.host)); }
    return parts.join("@");
  }

  var total = Math.max(1, endUs(info), num(info.end_to_end_us, 0));
  view.end = total;

  /* Flatten the tree without recursion (traces can be thousands deep). */
  function flatten() {
    var stack = [];
    var top = data.children || [];
    for (var i = top.length - 1; i >= 0; i--) { stack.push([top[i], 0, null]); }
    while (stack.length) {
      var item = stack.pop();
      var row = { node: item[0], info: item[0].info || {}, depth: item[1],
                  parent: item[2], kids: [], size: 1, collapsed: false,
                  hidden: false, index: rows.length };
      rows.push(row);
      if (row.parent) { row.parent.kids.push(row); }
      if (item[0].trace_id !== undefined) { rowsById[String(item[0].trace_id)] = row; }
      var children = item[0].children || [];
      for (var j = children.length - 1; j >= 0; j--) {
        stack.push([children[j], item[1] + 1, row]);
      }
    }
    for (var k = rows.length - 1; k >= 0; k--) {
      if (rows[k].parent) { rows[k].parent.size += rows[k].size; }
    }
  }

  function colourOf(service) {
    var key = service === undefined || service === null ? "" : String(service);
    if (!(key in serviceColour)) {
      serviceColour[key] = PALETTE[Object.keys(serviceColour).length % PALETTE.length];
    }
    return serviceColour[key];
  }

  function makeRow(row) {
    var i = row.info;
    var line = el("div", "row");
    if (i.error) { line.classList.add("error"); }
    row.text = [i.name, detail(i), i.service, i.host].map(function (v) {
      return v === undefined || v === null ? "" : String(v).toLowerCase();
    }).join("\n");
    line.setAttribute("role", "treeitem");
    var label = el("div", "label");
    label.style.paddingLeft = (row.depth * 14) + "px";
    row.toggle = el("button", "toggle", row.kids.length ? "\u25be" : "");
    row.toggle.type = "button";
    row.toggle.tabIndex = row.kids.length ? 0 : -1;
    label.appendChild(row.toggle);
    label.appendChild(el("span", "name", i.name));
    if (detail(i)) { label.appendChild(el("span", "detail", detail(i))); }
    label.appendChild(el("span", "where", where(i)));
    label.title = named(i) + (where(i) ? " (" + where(i) + ")" : "");
    var lane = el("div", "lane");
    row.bar = el("div", "bar");
    if (i.critical) { row.bar.classList.add("critical"); }
    if (i.error) { row.bar.classList.add("error"); }
    row.bar.style.setProperty("--service", colourOf(i.service));
    if (i.open) { row.bar.classList.add("open"); }
    row.dur = el("span", "dur", fmt(endUs(i) - startUs(i)) + (i.error ? " !" : ""));
    if (num(i.async_finished_us, 0) > endUs(i)) {
      /* What it started and did not wait for (a cast served later). */
      row.tail = el("div", "tail");
      row.tail.title = "work it started went on until " + fmt(i.async_finished_us);
      lane.appendChild(row.tail);
    }
    if (i.noise) { line.classList.add("noise"); }
    if (row.parent && startUs(i) > endUs(row.parent.info)) {
      line.classList.add("async");
      label.title += " \u2014 started " + fmt(startUs(i) - endUs(row.parent.info)) +
        " after its parent returned";
    }
    lane.appendChild(row.bar);
    lane.appendChild(row.dur);
    line.appendChild(label);
    line.appendChild(lane);
    line.addEventListener("click", function (event) {
      if (event.target === row.toggle) { toggle(row); } else { select(row); }
    });
    line.addEventListener("dblclick", function () { zoomTo(row); });
    row.el = line;
    return line;
  }

  function place(row) {
    var i = row.info;
    var span = view.end - view.start;
    var left = (startUs(i) - view.start) / span * 100;
    var width = Math.max(0, (endUs(i) - startUs(i)) / span * 100);
    row.bar.style.left = left + "%";
    row.bar.style.width = width + "%";
    /* The duration follows the bar; near the right edge it goes before
       the bar, or inside it when the bar is wide: never cut off. */
    var end = Math.max(left + width, 0);
    var side = end < 75 ? "after" : (left > 25 ? "before" : "inside");
    row.dur.className = "dur " + side;
    row.dur.style.left = (side === "after" ? end : side === "before" ? Math.max(left, 0)
                          : Math.min(end, 100)) + "%";
    placeCritical(row, span);
    if (row.tail) {
      var tailEnd = (num(i.async_finished_us, 0) - view.start) / span * 100;
      row.tail.style.left = (left + width) + "%";
      row.tail.style.width = Math.max(0, tailEnd - left - width) + "%";
    }
  }

  /* Red only where the span itself held the operation up: its window on
     the critical path less the windows of its children on the path. */
  function placeCritical(row, span) {
    var i = row.info;
    if (!i.critical) { return; }
    /* A report saved without the windows: the whole span, as it ran. */
    function from(x) { return num(x.critical_from_us, startUs(x)); }
    function to(x) { return num(x.critical_to_us, endUs(x)); }
    var pieces = [[from(i), to(i)]];
    row.kids.forEach(function (kid) {
      var k = kid.info;
      if (!k.critical) { return; }
      var next = [];
      pieces.forEach(function (p) {
        var lo = from(k), hi = to(k);
        if (hi <= p[0] || lo >= p[1]) { next.push(p); return; }
        if (lo > p[0]) { next.push([p[0], lo]); }
        if (hi < p[1]) { next.push([hi, p[1]]); }
      });
      pieces = next;
    });
    if (!row.segments) { row.segments = []; }
    row.segments.forEach(function (s) { s.remove(); });
    row.segments = pieces.filter(function (p) { return p[1] > p[0]; }).map(function (p) {
      var seg = el("div", "held");
      seg.style.left = ((p[0] - view.start) / span * 100) + "%";
      seg.style.width = ((p[1] - p[0]) / span * 100) + "%";
      row.bar.parentNode.insertBefore(seg, row.dur);
      return seg;
    });
  }

  function layout() {
    for (var i = 0; i < rows.length; i++) {
      if (!rows[i].hidden) { place(rows[i]); }
    }
    drawAxis();
  }

  function drawAxis() {
    var axis = document.getElementById("axis");
    axis.replaceChildren();
    /* As many ticks as fit, about 90 px each: labels never overlap. */
    var ticks = Math.max(1, Math.min(6, Math.floor(axis.clientWidth / 90)));
    for (var t = 0; t < ticks; t++) {
      var us = view.start + (view.end - view.start) * t / ticks;
      var tick = el("span", "tick", fmt(us));
      tick.style.left = (t / ticks * 100) + "%";
      axis.appendChild(tick);
    }
    var response = num(info.response_us, null);
    if (response !== null && response < total) {
      var mark = el("span", "response-mark", "response " + fmt(response));
      mark.id = "response-mark";
      var at = (response - view.start) / (view.end - view.start) * 100;
      mark.style.left = at + "%";
      if (at > 70) { mark.classList.add("flip"); }  /* its text left of the mark */
      if (response >= view.start && response <= view.end) { axis.appendChild(mark); }
    }
  }

  /* Hide every row under a collapsed row; one linear pass. */
  function refreshVisibility() {
    var hideUntil = -1;
    var kept = matching();
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      row.hidden = i < hideUntil || (!showNoise && !!row.info.noise && !row.kids.length) ||
        (kept !== null && !kept[i]);
      row.el.classList.toggle("hidden", row.hidden);
      if (!row.hidden && row.collapsed) { hideUntil = i + row.size; }
      if (row.kids.length) {
        row.toggle.textContent = row.collapsed ? "\u25b8" : "\u25be";
        row.toggle.setAttribute("aria-label", row.collapsed ? "expand" : "collapse");
      }
    }
    layout();
  }

  /* With a filter: the rows that match and their ancestors (null: all). */
  function matching() {
    var count = document.getElementById("search-count");
    matched.forEach(function (row) { row.el.classList.remove("match"); });
    matched = [];
    if (!query) { count.textContent = ""; return null; }
    var kept = [];
    rows.forEach(function (row) {
      if (row.text.indexOf(query) < 0) { return; }
      matched.push(row);
      row.el.classList.add("match");
      for (var r = row; r && !kept[r.index]; r = r.parent) { kept[r.index] = true; }
    });
    count.textContent = matched.length + " of " + rows.length + " spans";
    return kept;
  }

  function toggle(row) {
    if (!row.kids.length) { return; }
    row.collapsed = !row.collapsed;
    refreshVisibility();
  }

  function setAll(collapsed) {
    rows.forEach(function (row) { row.collapsed = collapsed && row.kids.length > 0; });
    refreshVisibility();
  }

  function zoom(factor, centerUs) {
    var span = view.end - view.start;
    var center = centerUs === undefined ? view.start + span / 2 : centerUs;
    var next = Math.min(total, Math.max(span * factor, 1));
    var frac = (center - view.start) / span;
    view.start = Math.max(0, Math.min(center - next * frac, total - next));
    view.end = view.start + next;
    layout();
  }

  function zoomTo(row) {
    var s = startUs(row.info), e = endUs(row.info);
    var pad = Math.max((e - s) * 0.05, 1);
    view.start = Math.max(0, s - pad);
    view.end = Math.min(total, Math.max(e + pad, view.start + 2));
    layout();
  }

  function resetZoom() { view.start = 0; view.end = total; layout(); }

  function valueText(value) {
    if (value === null || value === undefined) { return String(value); }
    if (typeof value === "object") { return JSON.stringify(value, null, 2); }
    return String(value);
  }

  function select(row) {
    if (selected) { selected.el.classList.remove("selected"); }
    selected = row;
    row.el.classList.add("selected");
    var details = document.getElementById("details");
    details.replaceChildren();
    details.appendChild(el("h3", "", row.info.name));
    if (row.info.error) {
      details.appendChild(el("p", "error-message", "Error: " +
        (row.info.error_message === undefined ? "(no message recorded)" : valueText(row.info.error_message))));
    }
    if (detail(row.info)) { details.appendChild(el("p", "detail", detail(row.info))); }
    var table = el("table");
    var raw = [];
    var add = function (key, value) {
      var tr = el("tr");
      tr.appendChild(el("td", "key", key));
      var td = el("td");
      td.appendChild(el("pre", "", valueText(value)));
      tr.appendChild(td);
      table.appendChild(tr);
    };
    add("trace_id", row.node.trace_id);
    add("parent_id", row.node.parent_id);
    add("duration", fmt(endUs(row.info) - startUs(row.info)));
    Object.keys(row.info).forEach(function (key) {
      if (key.indexOf("meta.raw_payload.") === 0) { raw.push(key); return; }
      if (key === "detail") { return; }  /* shown under the name */
      add(key, row.info[key]);
    });
    raw.forEach(function (key) { add(key.slice(17), row.info[key]); });
    details.appendChild(table);
  }

  function reveal(row) {
    for (var p = row.parent; p; p = p.parent) { p.collapsed = false; }
    refreshVisibility();
    select(row);
    row.el.scrollIntoView({ block: "center" });
  }

  function fillList(id, entries, describe) {
    var list = document.getElementById(id);
    (entries || []).forEach(function (entry) {
      var item = el("li", "", describe(entry));
      var row = rowsById[String(entry.trace_id)];
      if (row) { item.addEventListener("click", function () { reveal(row); }); }
      list.appendChild(item);
    });
  }

  function legend() {
    var box = document.getElementById("services");
    Object.keys(serviceColour).forEach(function (name) {
      var item = el("span", "service");
      var swatch = el("span", "swatch");
      swatch.style.background = serviceColour[name];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(name || "(no service)"));
      box.appendChild(item);
    });
  }

  function header() {
    var title = "Trace " + (info.base_id || "?");
    document.title = "stacktrail: " + title;
    document.getElementById("title").textContent = title;
    var parts = [fmt(total) + " end to end"];
    if (typeof info.response_us === "number") {
      parts.push("response " + fmt(info.response_us) +
                 (info.async_us ? " (+" + fmt(info.async_us) + " asynchronous)" : ""));
    }
    parts.push((info.span_count || rows.length) + " spans");
    if (info.error_count) { parts.push(info.error_count + " with errors"); }
    if (info.open_count) { parts.push(info.open_count + " open"); }
    if (info.started_at) { parts.push("started " + info.started_at + " UTC"); }
    if (info.services && info.services.length) { parts.push("services: " + info.services.join(", ")); }
    document.getElementById("summary").textContent = parts.join(" \u00b7 ");
  }

  function signed(us) { return (us > 0 ? "+" : us < 0 ? "\u2212" : "\u00b1") + fmt(Math.abs(us)); }

  /* The second trace of `trace show ID --compare OTHER`: per service and
     per service and kind, the time in each trace, what got slower most
     first (the order the report gives). */
  function comparison(c) {
    if (!c || !c.trace || !c.other) { return; }
    var box = document.getElementById("compare");
    box.hidden = false;
    var mine = num(c.trace.end_to_end_us, 0), theirs = num(c.other.end_to_end_us, 0);
    document.getElementById("compare-title").textContent =
      "Compared with trace " + (c.other.base_id || "?");
    document.getElementById("compare-summary").textContent =
      "End to end: this trace " + fmt(mine) + ", the other " + fmt(theirs) + " (" +
      signed(mine - theirs) + (theirs > 0 ? ", " + (100 * (mine - theirs) / theirs).toFixed(1) + "%" : "") +
      ")" + (c.other.started_at ? "; the other started " + c.other.started_at + " UTC" : "") +
      ". Held up: the time a service or kind alone kept the operation from finishing " +
      "(these add up to end to end).";
    fillCompared("compare-services", c.services, ["service"]);
    fillCompared("compare-kinds", c.kinds, ["service", "kind"]);
  }

  var COMPARED = [["held up: this", "the time its spans alone kept the operation from finishing (critical path)"],
                  ["other"], ["change"],
                  ["self time: this", "the time in its spans, not in a traced child"],
                  ["other"], ["change"]];

  function fillCompared(id, entries, fields) {
    var head = el("tr");
    fields.forEach(function (field) { head.appendChild(el("th", "", field)); });
    COMPARED.forEach(function (column) {
      var th = el("th", "num", column[0]);
      if (column[1]) { th.title = column[1]; }
      head.appendChild(th);
    });
    document.querySelector("#" + id + " thead").appendChild(head);
    var body = document.querySelector("#" + id + " tbody");
    (entries || []).forEach(function (k) {
      var change = num(k.held_change_us, 0);
      var tr = el("tr", change > 0 ? "slower" : change < 0 ? "faster" : "");
      fields.forEach(function (field) {
        var td = el("td", "name", field === "service" && !k.service ? "(no service)" : k[field]);
        td.title = td.textContent;
        tr.appendChild(td);
      });
      ["held_us", "other_held_us", "held_change_us",
       "self_us", "other_self_us", "self_change_us"].forEach(function (key, at) {
        var us = num(k[key], 0);
        /* The held-up change, which orders the rows, is coloured. */
        tr.appendChild(el("td", at === 2 ? "num change" : "num", at % 3 === 2 ? signed(us) : fmt(us)));
      });
      body.appendChild(tr);
    });
  }

  function wire() {
    document.getElementById("zoom-in").addEventListener("click", function () {
      zoom(0.5, selected ? (startUs(selected.info) + endUs(selected.info)) / 2 : undefined);
    });
    document.getElementById("zoom-out").addEventListener("click", function () { zoom(2); });
    document.getElementById("zoom-reset").addEventListener("click", resetZoom);
    document.getElementById("expand-all").addEventListener("click", function () { setAll(false); });
    document.getElementById("collapse-all").addEventListener("click", function () { setAll(true); });
    var search = document.getElementById("search");
    search.addEventListener("input", function () {
      query = search.value.trim().toLowerCase();
      refreshVisibility();
    });
    var noiseButton = document.getElementById("noise-toggle");
    var noiseCount = rows.filter(function (r) { return r.info.noise && !r.kids.length; }).length;
    if (noiseCount) {
      noiseButton.hidden = false;
      var label = function () {
        noiseButton.textContent = (showNoise ? "Hide" : "Show") + " transaction statements (" + noiseCount + ")";
      };
      label();
      noiseButton.addEventListener("click", function () {
        showNoise = !showNoise;
        label();
        refreshVisibility();
      });
    }
    /* Ctrl/Cmd + wheel zooms around the pointer; plain wheel scrolls. */
    lanes.addEventListener("wheel", function (event) {
      if (!event.ctrlKey && !event.metaKey) { return; }
      event.preventDefault();
      var axis = document.getElementById("axis").getBoundingClientRect();
      var frac = Math.min(Math.max((event.clientX - axis.left) / axis.width, 0), 1);
      zoom(event.deltaY < 0 ? 0.8 : 1.25, view.start + frac * (view.end - view.start));
    }, { passive: false });
    document.addEventListener("keydown", function (event) {
      if (event.key === "+" || event.key === "=") { zoom(0.5); }
      else if (event.key === "-") { zoom(2); }
      else if (event.key === "0") { resetZoom(); }
    });
  }

  flatten();
  header();
  var fragment = document.createDocumentFragment();
  rows.forEach(function (row) {
    /* Big traces open with their upper levels only. */
    row.collapsed = rows.length > 2000 && row.depth >= 2 && row.kids.length > 0;
    fragment.appendChild(makeRow(row));
  });
  lanes.appendChild(fragment);
  legend();
  if (!rows.length) { lanes.appendChild(el("p", "hint", "This trace has no spans.")); }
  function held(e) { return num(e.contribution_us, num(e.critical_us, 0)); }
  function heldText(e) {
    return fmt(held(e)) + " held up" +
      (num(e.queued_us, 0) > 0 ? " (" + fmt(e.queued_us) + " queued)" : "") +
      ((e.folded || []).length ? " (" + e.folded.length + " statement" +
        (e.folded.length === 1 ? "" : "s") + " folded in)" : "");
  }
  fillList("bottleneck", (data.critical_path || []).slice().sort(function (a, b) {
    return held(b) - held(a);
  }).slice(0, 5).filter(function (e) { return held(e) > 0; }), function (e) {
    return named(e) + " \u2014 " + heldText(e) + " (" + (100 * held(e) / total).toFixed(1) + "%)" +
      (where(e) ? " [" + where(e) + "]" : "") + (e.error ? " !" : "");
  });
  fillList("critical", data.critical_path, function (e) {
    return named(e) + " \u2014 " + heldText(e) + (e.error ? " !" : "");
  });
  fillList("selftime", (data.top_self_time || []).filter(function (e) { return e.self_us > 0; }),
    function (e) {
      return named(e) + " \u2014 " + fmt(e.self_us) + " self (" + (100 * num(e.share, 0)).toFixed(1) + "%)" +
        (where(e) ? " [" + where(e) + "]" : "") + (e.error ? " !" : "");
    });
  comparison(data.comparison);
  wire();
  refreshVisibility();
  document.body.setAttribute("data-rendered", String(rows.length));
}());
