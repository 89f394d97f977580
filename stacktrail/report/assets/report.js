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
  var lanes = document.getElementById("rows");

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

  var total = Math.max(1, endUs(info));
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

  function makeRow(row) {
    var i = row.info;
    var line = el("div", "row");
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
    if (i.open) { row.bar.classList.add("open"); }
    row.dur = el("span", "dur", fmt(endUs(i) - startUs(i)) + (i.error ? " !" : ""));
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
    row.dur.style.left = Math.min(Math.max(left + width, 0), 92) + "%";
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
    var ticks = 6;
    for (var t = 0; t < ticks; t++) {
      var us = view.start + (view.end - view.start) * t / ticks;
      var tick = el("span", "tick", fmt(us));
      tick.style.left = (t / ticks * 100) + "%";
      axis.appendChild(tick);
    }
  }

  /* Hide every row under a collapsed row; one linear pass. */
  function refreshVisibility() {
    var hideUntil = -1;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      row.hidden = i < hideUntil;
      row.el.classList.toggle("hidden", row.hidden);
      if (!row.hidden && row.collapsed) { hideUntil = i + row.size; }
      if (row.kids.length) {
        row.toggle.textContent = row.collapsed ? "\u25b8" : "\u25be";
        row.toggle.setAttribute("aria-label", row.collapsed ? "expand" : "collapse");
      }
    }
    layout();
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

  function header() {
    var title = "Trace " + (info.base_id || "?");
    document.title = "stacktrail: " + title;
    document.getElementById("title").textContent = title;
    var parts = ["total " + fmt(total), (info.span_count || rows.length) + " spans"];
    if (info.error_count) { parts.push(info.error_count + " with errors"); }
    if (info.open_count) { parts.push(info.open_count + " open"); }
    if (info.started_at) { parts.push("started " + info.started_at + " UTC"); }
    if (info.services && info.services.length) { parts.push("services: " + info.services.join(", ")); }
    document.getElementById("summary").textContent = parts.join(" \u00b7 ");
  }

  function wire() {
    document.getElementById("zoom-in").addEventListener("click", function () {
      zoom(0.5, selected ? (startUs(selected.info) + endUs(selected.info)) / 2 : undefined);
    });
    document.getElementById("zoom-out").addEventListener("click", function () { zoom(2); });
    document.getElementById("zoom-reset").addEventListener("click", resetZoom);
    document.getElementById("expand-all").addEventListener("click", function () { setAll(false); });
    document.getElementById("collapse-all").addEventListener("click", function () { setAll(true); });
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
  if (!rows.length) { lanes.appendChild(el("p", "hint", "This trace has no spans.")); }
  fillList("critical", data.critical_path, function (e) {
    return named(e) + " \u2014 " + fmt(num(e.critical_us, 0)) + " on the path" + (e.error ? " !" : "");
  });
  fillList("selftime", (data.top_self_time || []).filter(function (e) { return e.self_us > 0; }),
    function (e) {
      return named(e) + " \u2014 " + fmt(e.self_us) + " self (" + (100 * num(e.share, 0)).toFixed(1) + "%)" +
        (where(e) ? " [" + where(e) + "]" : "") + (e.error ? " !" : "");
    });
  wire();
  refreshVisibility();
  document.body.setAttribute("data-rendered", String(rows.length));
}());
