// jobvisor dashboard: live refresh (paused while the tab is hidden or a choice is being
// made), confirmations, select-all, and the throughput chart. No inline script anywhere.
(function () {
  "use strict";
  var every = parseInt(document.body.dataset.refresh || "2000", 10);

  function busy(region) {
    return region.querySelector("input:checked") !== null ||
      region.contains(document.activeElement) && document.activeElement !== document.body;
  }

  // One request per refresh, whatever the number of live regions on the page: each
  // region is swapped (by htmx) from the same fresh copy of the page.
  function refresh() {
    if (document.visibilityState !== "visible" || !window.htmx) return;
    drawChart();
    var regions = Array.prototype.filter.call(document.querySelectorAll("[data-live]"),
      function (region) { return region.id && !busy(region); });
    if (!regions.length) return;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (reply) { return reply.ok ? reply.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (region) {
          var replacement = fresh.getElementById(region.id);
          if (replacement && region.isConnected && !busy(region)) {
            window.htmx.swap(region, replacement.outerHTML, { swapStyle: "outerHTML" });
          }
        });
      })
      .catch(function () { /* the next refresh tries again */ });
  }

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = button && button.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    var all = event.target.closest("[data-select-all]");
    if (!all) return;
    var form = all.closest("form");
    form.querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = all.checked; });
  });

  var chart = null;
  function drawChart() {
    var box = document.getElementById("chart");
    if (!box || !window.uPlot) return;
    fetch(box.dataset.series, { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (series) {
        if (!series) return;
        var data = [series.minutes, series.counts.completed,
          series.counts.dead.map(function (d, i) { return d + series.counts.retried[i]; })];
        if (chart) { chart.setData(data); return; }
        var dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
        var axis = { stroke: dark ? "#98a2b3" : "#667085", grid: { stroke: dark ? "#2a303a" : "#e3e6eb" } };
        chart = new window.uPlot({
          width: box.clientWidth, height: 240,
          series: [{}, { label: "completed", stroke: dark ? "#69db7c" : "#2b8a3e", width: 2,
                         fill: dark ? "rgba(105,219,124,0.12)" : "rgba(43,138,62,0.10)",
                         points: { show: false } },
                   { label: "failed or retried", stroke: dark ? "#ff6b6b" : "#c92a2a", width: 2,
                     points: { show: false } }],
          axes: [axis, axis], scales: { x: { time: true } }
        }, data, box);
        window.addEventListener("resize", function () { chart.setSize({ width: box.clientWidth, height: 240 }); });
      })
      .catch(function () { /* the next refresh tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawChart();
    window.setInterval(refresh, every);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") refresh();
    });
  });
})();
