/* Nachtwacht dashboard: CSRF header for htmx, session and connection handling for the
   polled fragments, keyboard shortcuts, and the probe chart (uPlot). Everything else is
   server-rendered HTML that works without this file. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function loginUrl() {
    return "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  // -- htmx ---------------------------------------------------------------------------------
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token && event.detail.verb !== "get") {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  // a poll after the session ended: log in again and come back to this page
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status === 401) {
      location.assign(loginUrl());
    }
  });

  // say so when the dashboard cannot reach its server, instead of showing stale data as live
  function offline(on) {
    var banner = document.getElementById("offline");
    if (on && !banner) {
      banner = document.createElement("p");
      banner.id = "offline";
      banner.className = "flash error";
      banner.setAttribute("role", "alert");
      banner.textContent =
        "Cannot reach the Nachtwacht server: what you see may be out of date. Retrying…";
      var main = document.getElementById("main");
      if (main) main.insertBefore(banner, main.firstChild);
    } else if (!on && banner) {
      banner.remove();
    }
  }
  document.addEventListener("htmx:sendError", function () { offline(true); });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) offline(false);
  });

  // -- keyboard -----------------------------------------------------------------------------
  var ROUTES = {
    o: "/", i: "/incidents", e: "/errors", y: "/analytics", b: "/runbooks", r: "/reports", x: "/security", d: "/drills", c: "/oncall", s: "/settings"
  };
  var prefix = false;
  var prefixTimer = null;

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && target.closest && target.closest("input, textarea, select, [contenteditable]")) {
      return;
    }
    if (prefix && ROUTES[event.key]) {
      event.preventDefault();
      prefix = false;
      location.assign(ROUTES[event.key]);
      return;
    }
    prefix = false;
    if (event.key === "g") {
      prefix = true;
      clearTimeout(prefixTimer);
      prefixTimer = setTimeout(function () { prefix = false; }, 1500);
    } else if (event.key === "?") {
      var help = document.getElementById("keys-help");
      if (help && help.showModal) {
        if (help.open) help.close(); else help.showModal();
      }
    } else if (event.key === "a") {
      // focus, not press: acknowledging stays a deliberate Enter
      var ack = document.getElementById("ack-button");
      if (ack) {
        event.preventDefault();
        ack.focus();
      }
    }
  });

  // -- chart --------------------------------------------------------------------------------
  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function fmt(digits, unit) {
    return function (_u, v) { return v == null ? "—" : v.toFixed(digits) + unit; };
  }

  function columns(rows, size, wantValue) {
    var xs = [], avg = [], max = [], avail = [], value = [];
    var anyValue = false;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      // no bucket for a while means no checks ran: draw a gap, not a line across it
      if (xs.length && r.ts - xs[xs.length - 1] > size * 1.5) {
        xs.push(xs[xs.length - 1] + size);
        avg.push(null); max.push(null); avail.push(null); value.push(null);
      }
      xs.push(r.ts);
      avg.push(r.latency_avg);
      max.push(r.latency_max);
      avail.push(r.availability == null ? null : r.availability * 100);
      // the maximum is exact; an average over buckets with failed (valueless) checks is not
      var v = wantValue ? r.value_max : null;
      if (v != null) anyValue = true;
      value.push(v);
    }
    var data = [xs, avg, max, avail];
    if (anyValue) data.push(value);
    return { data: data, anyValue: anyValue };
  }

  function setupChart(el) {
    var status = document.getElementById("chart-status");
    if (typeof uPlot === "undefined") {
      if (status) status.textContent = "The chart library did not load.";
      return;
    }
    var name = el.dataset.name;
    var timezone = el.dataset.timezone;
    // the server's clock, not the browser's: they differ in tests and on badly set laptops
    var serverNow = parseFloat(el.dataset.now);
    var loadedAt = Date.now() / 1000;
    var plot = null;
    var request = 0;

    function now() { return serverNow + (Date.now() / 1000 - loadedAt); }

    function options(anyValue) {
      var text = cssVar("--text", "#1c2128");
      var grid = cssVar("--line", "#d8dee4");
      var axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
      var series = [
        { value: nwTime.stamp(timezone) },
        { label: "latency avg", scale: "ms", stroke: "#2f81f7", width: 1.5, value: fmt(1, " ms") },
        { label: "latency max", scale: "ms", stroke: "#8fb3e8", width: 1, dash: [4, 3], value: fmt(1, " ms") },
        { label: "available", scale: "pct", stroke: "#2da44e", width: 1.5, value: fmt(2, " %") },
      ];
      if (anyValue) {
        series.push({ label: "value (max)", scale: "val", stroke: "#bf8700", width: 1.5, value: fmt(2, "") });
      }
      var axes = [
        // 24-hour times in the site's timezone, as the rest of the pages write them
        Object.assign({}, axis, {
          values: nwTime.axis(timezone, function (labels, at) { el.dataset.ticks = labels.join("|"); el.dataset.tickTimes = at.join("|"); }),
        }),
        Object.assign({}, axis, { scale: "ms", label: "latency (ms)" }),
        Object.assign({}, axis, { scale: "pct", side: 1, label: "available (%)", grid: { show: false } }),
      ];
      if (anyValue) {
        axes.push(Object.assign({}, axis, { scale: "val", side: 1, label: "value", grid: { show: false } }));
      }
      var opts = {
        width: Math.max(el.clientWidth, 280),
        height: 300,
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: true }, pct: { range: [0, 100] } },
        hooks: {
          // the x range drawn, in epoch seconds: a hook for tests and scripts
          setScale: [function (u, key) {
            if (key !== "x") return;
            el.dataset.xMin = String(u.scales.x.min);
            el.dataset.xMax = String(u.scales.x.max);
          }],
        },
        series: series,
        axes: axes,
      };
      if (timezone) {
        opts.tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), timezone); };
      }
      return opts;
    }

    function load(range) {
      var ticket = ++request;
      var until = now();
      var since = until - range;
      var resolution = range <= 86400 ? "minute" : "hour";
      var size = resolution === "minute" ? 60 : 3600;
      if (status) status.textContent = "Loading…";
      var url = "/api/v1/probes/" + encodeURIComponent(name) + "/rollups?resolution=" + resolution +
        "&since=" + Math.floor(since) + "&until=" + Math.ceil(until);
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (resp) {
          if (resp.status === 401) { location.assign(loginUrl()); throw new Error("login"); }
          if (!resp.ok) throw new Error("the server answered " + resp.status);
          return resp.json();
        })
        .then(function (rows) {
          if (ticket !== request) return; // a newer range was chosen meanwhile
          var cols = columns(rows, size, el.dataset.value !== "no");
          if (plot) plot.destroy();
          el.textContent = "";
          plot = new uPlot(options(cols.anyValue), cols.data, el);
          // one bucket or none: span the range asked for (uPlot's own range around a single
          // point runs for years)
          if (rows.length < 2) plot.setScale("x", { min: since, max: until });
          if (status) {
            status.textContent = rows.length
              ? rows.length + " " + resolution + (rows.length === 1 ? " bucket" : " buckets")
              : "No data in this range yet (rollups are made every minute).";
          }
        })
        .catch(function (err) {
          if (status && err.message !== "login") {
            status.textContent = "Could not load the chart: " + err.message;
          }
        });
    }

    var buttons = document.querySelectorAll(".ranges button[data-range]");
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
        el.dataset.range = button.dataset.range;
        load(parseFloat(button.dataset.range));
      });
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () {
        if (plot) plot.setSize({ width: Math.max(el.clientWidth, 280), height: 300 });
      }, 150);
    });
    load(parseFloat(el.dataset.range || "86400"));
  }

  document.addEventListener("DOMContentLoaded", function () {
    var chart = document.getElementById("chart");
    if (chart) setupChart(chart);
  });
})();
