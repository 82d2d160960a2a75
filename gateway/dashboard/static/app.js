// SynapGate dashboard: sortable and paged tables (progressive enhancement; the server order is the default).
(function () {
  "use strict";

  function cellValue(row, index, kind) {
    var cell = row.children[index];
    if (!cell) return kind === "num" ? -Infinity : "";
    var raw = cell.getAttribute("data-v");
    if (raw === null) raw = cell.textContent.trim();
    if (kind === "num") { var n = parseFloat(raw); return isNaN(n) ? -Infinity : n; }
    return raw.toLowerCase();
  }

  function paginate(table) {
    var size = parseInt(table.getAttribute("data-page-size") || "0", 10);
    if (!size) return;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var pager = table.parentNode.querySelector(".table-pager[data-for]") || null;
    if (rows.length <= size) { if (pager) pager.remove(); return; }
    var page = parseInt(table.getAttribute("data-page") || "0", 10);
    var pages = Math.ceil(rows.length / size);
    page = Math.max(0, Math.min(page, pages - 1));
    table.setAttribute("data-page", String(page));
    rows.forEach(function (row, i) { row.classList.toggle("paged-out", Math.floor(i / size) !== page); });
    if (!pager) {
      pager = document.createElement("div");
      pager.className = "table-pager";
      pager.setAttribute("data-for", "1");
      table.parentNode.appendChild(pager);
    }
    pager.textContent = "";
    var prev = document.createElement("button");
    prev.type = "button"; prev.textContent = "← Prev"; prev.disabled = page === 0;
    prev.addEventListener("click", function () { table.setAttribute("data-page", String(page - 1)); paginate(table); });
    var label = document.createElement("span");
    label.className = "muted";
    label.textContent = (page * size + 1) + "–" + Math.min(rows.length, (page + 1) * size) + " of " + rows.length;
    var next = document.createElement("button");
    next.type = "button"; next.textContent = "Next →"; next.disabled = page >= pages - 1;
    next.addEventListener("click", function () { table.setAttribute("data-page", String(page + 1)); paginate(table); });
    pager.appendChild(prev); pager.appendChild(label); pager.appendChild(next);
  }

  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var index = headers.indexOf(th);
    var kind = th.getAttribute("data-sort");
    var ascending = th.getAttribute("aria-sort") !== "ascending" && (kind === "text" || th.getAttribute("aria-sort") === "descending");
    headers.forEach(function (h) { if (h !== th && h.hasAttribute("data-sort")) h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, kind), y = cellValue(b, index, kind);
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.setAttribute("data-page", "0");
    paginate(table);
  }

  function enhance(root) {
    var tables = (root || document).querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (table.getAttribute("data-enhanced")) return;
      table.setAttribute("data-enhanced", "1");
      Array.prototype.forEach.call(table.querySelectorAll("th[data-sort]"), function (th) {
        th.tabIndex = 0;
        th.setAttribute("role", "columnheader");
        if (!th.hasAttribute("aria-sort")) th.setAttribute("aria-sort", "none");
        th.addEventListener("click", function () { sortBy(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
        });
      });
      paginate(table);
    });
  }

  // Destructive forms (revoke a key) ask first; the question is the form's data-confirm.
  document.addEventListener("submit", function (e) {
    var question = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) e.preventDefault();
  }, true);

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSettle", function (e) { enhance(e.target); });
})();
