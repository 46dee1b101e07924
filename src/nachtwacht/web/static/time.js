/* Nachtwacht's one way of writing times on a chart: 24-hour clock, ISO dates, in the site's
   timezone, as the server-rendered pages write them (web/render.py's Fmt: 2027-02-08 03:15).
   uPlot's own defaults are US 12-hour ("3pm", "2/8/27"); the charts (app.js, analytics.js)
   take their axis labels and legend times from here instead. Needs uPlot for the timezone. */
(function () {
  "use strict";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // epoch seconds -> a Date whose local fields read as the wall clock in `zone`
  function zoned(zone) {
    return function (ts) {
      var d = new Date(ts * 1e3);
      return zone && typeof uPlot !== "undefined" ? uPlot.tzDate(d, zone) : d;
    };
  }

  function day(d) { return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()); }
  function clock(d, seconds) {
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (seconds ? ":" + pad(d.getSeconds()) : "");
  }

  // "2027-02-08 03:15": the legend and anything else that names one moment
  function stamp(zone) {
    var at = zoned(zone);
    return function (_u, ts) { return ts == null ? "—" : day(at(ts)) + " " + clock(at(ts), false); };
  }

  // the x axis: "03:15" per tick, with the date under the first tick of each day; whole days
  // (and longer) by their date only. `seen(labels, splits)` hears them with their times (the chart's test hook).
  function axis(zone, seen) {
    var at = zoned(zone);
    return function (_u, splits, _axis, _space, incr) {
      var last = null;
      var labels = splits.map(function (ts) {
        if (ts == null) return "";
        var d = at(ts);
        var date = day(d);
        var text;
        if (incr >= 86400) {
          // whole days: "02-08", the year under the first tick of each year
          text = date.slice(5) + (date.slice(0, 4) !== last ? "\n" + date.slice(0, 4) : "");
          last = date.slice(0, 4);
        } else {
          text = clock(d, incr < 60) + (date !== last ? "\n" + date : "");
          last = date;
        }
        return text;
      });
      if (seen) seen(labels, splits);
      return labels;
    };
  }

  window.nwTime = { zoned: zoned, stamp: stamp, axis: axis };
})();
