/* Nachtwacht's Analytics page: the three uPlot charts, drawn from the JSON the page carries in
   #analytics-data. A file rather than an inline script: the Content-Security-Policy
   (script-src 'self') runs no inline script. */
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var source = document.getElementById("analytics-data");
  if (!source) return; // no errors in the window: no charts
  var status = document.getElementById("chart-status");
  if (typeof uPlot === "undefined") { status.textContent = "The chart library did not load."; return; }
  var data = JSON.parse(source.textContent);
  var zone = source.dataset.timezone;
  var css = getComputedStyle(document.documentElement);
  var text = css.getPropertyValue("--text").trim() || "#1c2128";
  var grid = css.getPropertyValue("--line").trim() || "#d8dee4";
  var axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
  var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 60] }) : undefined;
  function width(el) { return Math.max(el.clientWidth, 260); }
  function tz(opts) { opts.tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), zone); }; return opts; }
  // 24-hour times and ISO dates in the site's timezone (time.js), not uPlot's US defaults
  function timeAxis(el) {
    return Object.assign({}, axis, { values: nwTime.axis(zone, function (labels, at) { el.dataset.ticks = labels.join("|"); el.dataset.tickTimes = at.join("|"); }) });
  }
  var plots = [];
  function zeroUp(_u, _lo, hi) { return [0, hi > 0 ? hi * 1.1 : 1]; }

  // the trend line over the days with data (from d.first on), none when there is no trend
  var d = data.daily, n = d.y.length, from = d.first || 0, mid = from + (n - from - 1) / 2;
  var fitted = d.y.map(function (_v, i) { return d.slope == null || i < from ? null : Math.max(0, d.mean + d.slope * (i - mid)); });
  var daily = document.getElementById("chart-daily");
  plots.push([daily, new uPlot(tz({
    width: width(daily), height: 220,
    // half a day either side, so the first and last bars are whole; counts start at zero
    scales: { x: { time: true, range: function (_u, lo, hi) { return [lo - 43200, hi + 43200]; } }, y: { range: zeroUp } },
    series: [{ value: function (_u, ts) { return ts == null ? "—" : nwTime.stamp(zone)(_u, ts).slice(0, 10); } },
             { label: "events", stroke: "#2f81f7", fill: "rgba(47,129,247,.35)", paths: bars, points: { show: false } },
             { label: "trend", stroke: "#bf8700", width: 2, dash: [6, 4] }],
    axes: [timeAxis(daily), Object.assign({}, axis)],
  }), [d.x, d.y, fitted], daily)]);

  var hoursEl = document.getElementById("chart-hours");
  var hx = []; for (var h = 0; h < 24; h++) hx.push(h);
  plots.push([hoursEl, new uPlot({
    width: width(hoursEl), height: 220, scales: { x: { time: false, range: [-0.5, 23.5] }, y: { range: zeroUp } },
    series: [{ label: "hour", value: function (_u, v) { return v == null ? "—" : (v < 10 ? "0" : "") + v + ":00"; } },
             { label: "events", stroke: "#6f42c1", fill: "rgba(111,66,193,.35)", paths: bars, points: { show: false } }],
    axes: [Object.assign({}, axis, { incrs: [1, 2, 3, 6], values: function (_u, vals) { return vals.map(function (v) { return (v < 10 ? "0" : "") + v; }); } }), Object.assign({}, axis)],
  }, [hx, data.hours], hoursEl)]);

  var s = data.series, sx = [], med = [];
  for (var i = 0; i < s.y.length; i++) { sx.push(s.first + i * 3600); med.push(s.median); }
  var seriesEl = document.getElementById("chart-series");
  plots.push([seriesEl, new uPlot(tz({
    width: width(seriesEl), height: 240, cursor: { drag: { x: true, y: false } }, scales: { x: { time: true }, y: { range: zeroUp } },
    series: [{ value: nwTime.stamp(zone) }, { label: "events per hour", stroke: "#c5162a", width: 1.5 },
             { label: "median", stroke: "#57606a", dash: [4, 4], width: 1 }],
    axes: [timeAxis(seriesEl), Object.assign({}, axis)],
  }), [sx, s.y, med], seriesEl)]);
  status.textContent = "Drag across the hourly chart to zoom in, double-click to zoom out.";

  var timer = null;
  window.addEventListener("resize", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { plots.forEach(function (p) { p[1].setSize({ width: width(p[0]), height: p[1].height }); }); }, 150);
  });
});
