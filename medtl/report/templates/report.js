// medtl report: table sorting and filtering, overlay opacity, review statuses. No network.
(function () {
  "use strict";
  var table = document.getElementById("cases");

  function sortValue(cell, type) {
    var v = cell ? cell.getAttribute("data-sort") : "";
    if (type === "number") {
      var n = parseFloat(v);
      return isNaN(n) ? -Infinity : n;
    }
    return (v || "").toLowerCase();
  }

  function sortBy(th) {
    var body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var type = th.getAttribute("data-type") || "text";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a.cells[col], type), y = sortValue(b.cells[col], type);
      if (x < y) { return ascending ? -1 : 1; }
      if (x > y) { return ascending ? 1 : -1; }
      return 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function applyFilters() {
    var text = document.getElementById("filter-text").value.trim().toLowerCase();
    var decision = document.getElementById("filter-decision").value;
    var ood = document.getElementById("filter-ood").value;
    var review = document.getElementById("filter-review").value;
    var shown = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (!text || r.textContent.toLowerCase().indexOf(text) !== -1) &&
        (!decision || r.getAttribute("data-decision") === decision) &&
        (!ood || r.getAttribute("data-ood") === ood) &&
        (!review || r.getAttribute("data-review") === review);
      r.hidden = !ok;
      if (ok) { shown++; }
    }
    document.getElementById("shown-count").textContent = "showing " + shown + " of " + rows.length;
  }

  function applyVerdicts() {
    var blob = document.getElementById("medtl-verdicts");
    if (!blob) { return; }
    var statuses = JSON.parse(blob.textContent || "{}");
    var rows = table.tBodies[0].rows, reviewed = 0;
    for (var i = 0; i < rows.length; i++) {
      var key = rows[i].getAttribute("data-key"), s = statuses[key];
      if (rows[i].getAttribute("data-decision") === "error") { continue; }
      if (s) {
        rows[i].setAttribute("data-review", s.status);
        var cell = rows[i].querySelector(".review-cell");
        cell.textContent = s.text;
        cell.setAttribute("data-sort", s.status);
        reviewed++;
      }
    }
    if (Object.keys(statuses).length) { document.getElementById("reviewed-count").textContent = reviewed; }
  }

  if (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(th); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(th); } });
    });
    applyVerdicts();
    var form = document.getElementById("filters");
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    form.addEventListener("input", applyFilters);
    form.addEventListener("change", applyFilters);
    applyFilters();
  }

  // on a served page: a, d, u choose the verdict, n records it and opens the next case
  var verdictForm = document.getElementById("verdict-form");
  if (verdictForm) {
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.ctrlKey || e.metaKey || e.altKey || (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio")))) {
        return;
      }
      var choice = {a: "agree", d: "disagree", u: "uncertain"}[e.key];
      if (choice) {
        verdictForm.querySelector("input[name=verdict][value=" + choice + "]").checked = true;
        e.preventDefault();
      } else if (e.key === "n" || e.key === "Enter") {
        var chosen = verdictForm.querySelector("input[name=verdict]:checked");
        var next = verdictForm.querySelector("button[value=next]");
        if (chosen) {
          e.preventDefault();
          (e.key === "n" && next ? next : verdictForm.querySelector("button[type=submit]")).click();
        }
      }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("input.opacity"), function (slider) {
    slider.addEventListener("input", function () {
      Array.prototype.forEach.call(document.querySelectorAll("img.heat"), function (img) {
        img.style.opacity = slider.value / 100;
      });
    });
  });
})();
