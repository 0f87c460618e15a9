// The monitor's web page: one self-contained HTML document (inline CSS and script,
// no external asset, so it works on a plant network without internet). It polls
// `api/fleet` every 2 s and, for the gateway clicked, `api/gateways/<id>`; both
// relative, so the page also works behind a reverse proxy under a path prefix.
//
// Every string from the API (gateway ids, device names, errors, history details)
// comes from the fleet and is untrusted: the script builds elements with
// `textContent` and `setAttribute` only, never `innerHTML` with data.
//
// Stable hooks for tests and scripts:
//   body[data-loaded]                       "true" after the first fleet rendered
//   #connection[data-connection]            "live" | "unreachable"
//   #totals [data-total=<name>]             the fleet totals
//   #fleet tr[data-gateway][data-state][data-lost]   one row per gateway
//     td[data-field=<name>]                 state, since, boot, backlog, replay, dropped, lost, devices
//     .device[data-device][data-state]      one chip per device
//   #detail[data-gateway][data-state]       the clicked gateway
//     #history li[data-kind]                its history, newest first

/// The monitor's single-page fleet view, served at `/`.
public enum MonitorPage {
    /// The complete HTML document (UTF-8), with its CSS and script inline.
    public static let html: String = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>edge-monitor · fleet</title>
<style>
:root {
  --bg: #0f141a; --panel: #161d26; --panel2: #1c2531; --line: #2a3544;
  --text: #d8e0ea; --muted: #8494a7; --accent: #5aa9e6;
  --online: #2fb36d; --lost-conn: #e5484d; --shutdown: #8a9bb0; --stale: #f0a020; --unknown: #6b7785;
  --loud: #ff3b3b;
  --mono: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
  --sans: system-ui, "DejaVu Sans", "Liberation Sans", "Segoe UI", Roboto, Arial, sans-serif;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text); font: 13px/1.4 var(--sans); }
header { display: flex; align-items: center; gap: 18px; padding: 10px 18px; background: var(--panel);
  border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; }
header h1 { font-size: 15px; margin: 0; font-weight: 600; letter-spacing: .02em; white-space: nowrap; }
header h1 span { color: var(--muted); font-weight: 400; }
#totals { display: flex; gap: 8px; flex-wrap: wrap; }
.total { padding: 3px 10px; border-radius: 3px; background: var(--panel2); border: 1px solid var(--line);
  font-variant-numeric: tabular-nums; white-space: nowrap; }
.total b { font-size: 14px; margin-right: 4px; }
.total.t-online b { color: var(--online); } .total.t-offline b { color: var(--lost-conn); }
.total.t-stale b { color: var(--stale); }
.total.t-lost.nonzero { background: var(--loud); border-color: var(--loud); color: #fff; }
.total.t-lost.nonzero b { color: #fff; }
.spacer { flex: 1; }
#filter { background: var(--bg); color: var(--text); border: 1px solid var(--line); border-radius: 3px;
  padding: 4px 8px; width: 200px; font: inherit; }
#connection { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }
#connection::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  margin-right: 6px; background: var(--online); vertical-align: 1px; }
#connection[data-connection="unreachable"] { color: var(--lost-conn); font-weight: 600; }
#connection[data-connection="unreachable"]::before { background: var(--lost-conn); }
#connection[data-connection="connecting"]::before { background: var(--unknown); }
#lost-banner { display: none; background: var(--loud); color: #fff; font-weight: 700; padding: 8px 18px;
  letter-spacing: .02em; }
#lost-banner.shown { display: block; }
main { display: flex; align-items: flex-start; }
#table-wrap { flex: 1; min-width: 0; padding: 12px 18px 40px; overflow-x: auto; }
body.unreachable #table-wrap { opacity: .55; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 11px; text-transform: uppercase;
  letter-spacing: .06em; padding: 6px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: 7px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.gw { cursor: pointer; }
tr.gw:hover { background: var(--panel); }
tr.gw.selected { background: var(--panel2); box-shadow: inset 3px 0 0 var(--accent); }
tr.gw[data-lost]:not([data-lost="0"]) { background: rgba(255, 59, 59, .10); box-shadow: inset 4px 0 0 var(--loud); }
.gw-id { font-family: var(--mono); font-weight: 600; word-break: break-all; }
.badges { margin-top: 3px; display: flex; gap: 4px; flex-wrap: wrap; }
.badge { font-size: 11px; padding: 0 5px; border-radius: 3px; border: 1px solid var(--line); color: var(--muted); white-space: nowrap; }
.badge.warn { color: var(--stale); border-color: var(--stale); }
.badge.bad { color: #fff; background: var(--lost-conn); border-color: var(--lost-conn); }
.state { display: inline-block; padding: 2px 8px; border-radius: 3px; font-weight: 600; white-space: nowrap;
  color: #0b0f14; }
.s-online { background: var(--online); }
.s-offline_connection_lost { background: var(--lost-conn); color: #fff; }
.s-offline_shutdown { background: var(--shutdown); }
.s-stale { background: var(--stale); }
.s-unknown { background: var(--unknown); color: #fff; }
.sub { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; white-space: nowrap; }
.mono { font-family: var(--mono); }
.zero { color: var(--muted); }
.dropped { color: var(--stale); font-weight: 600; }
.lost-cell.nonzero { color: #fff; }
.lost-big { display: inline-block; background: var(--loud); color: #fff; font-weight: 800; padding: 1px 7px;
  border-radius: 3px; letter-spacing: .04em; white-space: nowrap; }
.ranges { font-family: var(--mono); font-size: 11px; color: #ffb3b3; margin-top: 3px; white-space: nowrap; }
.bar { width: 120px; height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; margin: 4px 0 2px; }
.bar > div { height: 100%; background: var(--accent); }
.devices { display: flex; flex-wrap: wrap; gap: 4px; max-width: 420px; }
.device { font-size: 12px; padding: 1px 6px; border-radius: 3px; border: 1px solid var(--line); white-space: nowrap; }
.device::before { content: ""; display: inline-block; width: 7px; height: 7px; border-radius: 50%; margin-right: 5px;
  background: var(--unknown); vertical-align: 1px; }
.device[data-state="online"]::before { background: var(--online); }
.device[data-state="offline"] { border-color: var(--lost-conn); }
.device[data-state="offline"]::before { background: var(--lost-conn); }
.device-error { display: block; color: #ff9a9a; font-size: 11px; white-space: normal; max-width: 420px; }
#empty { color: var(--muted); padding: 30px 0; text-align: center; }
aside#detail { width: 460px; flex: none; background: var(--panel); border-left: 1px solid var(--line);
  min-height: calc(100vh - 48px); padding: 14px 16px 40px; position: sticky; top: 48px;
  max-height: calc(100vh - 48px); overflow-y: auto; }
aside#detail[hidden] { display: none; }
#detail h2 { margin: 0 0 8px; font-size: 15px; font-family: var(--mono); word-break: break-all; }
#detail h3 { margin: 16px 0 6px; font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .06em; }
#detail-close { float: right; background: none; border: 1px solid var(--line); color: var(--muted);
  border-radius: 3px; cursor: pointer; font: inherit; padding: 1px 8px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 12px; margin: 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
#detail table td, #detail table th { padding: 4px 6px; font-size: 12px; }
ol#history { list-style: none; margin: 0; padding: 0; }
ol#history li { display: grid; grid-template-columns: 150px 96px 1fr; gap: 8px; padding: 4px 0;
  border-bottom: 1px solid var(--line); font-size: 12px; }
.h-ts { color: var(--muted); font-family: var(--mono); font-size: 11px; }
.kind { font-size: 11px; font-weight: 600; text-transform: uppercase; letter-spacing: .04em; }
.k-birth { color: var(--online); } .k-will { color: var(--lost-conn); } .k-shutdown { color: var(--shutdown); }
.k-gap { color: var(--stale); } .k-device { color: var(--accent); } .k-stale { color: var(--stale); }
.k-lost, .k-seal_failure { color: var(--loud); }
.h-detail { word-break: break-word; }
.note { color: var(--muted); font-size: 12px; }
.error-text { color: var(--lost-conn); }
footer { color: var(--muted); font-size: 11px; padding: 0 18px 16px; }
</style>
</head>
<body data-loaded="false">
<header>
  <h1>edge-monitor <span>fleet</span></h1>
  <div id="totals"></div>
  <div class="spacer"></div>
  <input id="filter" type="search" placeholder="filter gateways" aria-label="filter gateways" autocomplete="off">
  <div id="connection" data-connection="connecting">connecting…</div>
</header>
<div id="lost-banner" role="alert"></div>
<main>
  <div id="table-wrap">
    <table>
      <thead><tr>
        <th>Gateway</th><th>State</th><th>Since</th><th class="num">Boot</th>
        <th>Backlog</th><th>Replay</th><th class="num">Dropped</th><th class="num">Lost</th><th>Devices</th>
      </tr></thead>
      <tbody id="fleet"></tbody>
    </table>
    <div id="empty">Waiting for the monitor…</div>
  </div>
  <aside id="detail" hidden aria-live="polite"></aside>
</main>
<footer>Problems first: data lost, offline, stale, then online; ties by gateway id. Updates every 2 s.
Dropped = counted and reported by the gateway (buffer limits, full disk, I/O error, shutdown; each with its reason in the gateway's history). Lost = a seq the gateway committed, neither received nor
reported dropped, after the gateway reported an empty backlog.</footer>
<script>
"use strict";
(function () {
  var POLL_MS = 2000;
  var MAX_ROWS = 1000;
  var STATE_WORDS = {
    online: "online",
    offline_connection_lost: "offline: connection lost",
    offline_shutdown: "offline: shutdown",
    stale: "stale",
    unknown: "unknown"
  };
  var STATE_RANK = { offline_connection_lost: 0, stale: 1, unknown: 2, offline_shutdown: 3, online: 4 };

  var fleetBody = document.getElementById("fleet");
  var totalsBox = document.getElementById("totals");
  var connection = document.getElementById("connection");
  var lostBanner = document.getElementById("lost-banner");
  var emptyNote = document.getElementById("empty");
  var detail = document.getElementById("detail");
  var filterInput = document.getElementById("filter");

  var rows = new Map();         // gateway id -> {row, key, gateway}
  var replayPeak = new Map();   // gateway id -> largest backlog seen during the current replay
  var selected = null;          // gateway id shown in the detail panel
  var lastFleet = null;
  var lastOK = null;
  var detailTimer = null;

  // ---- element helpers: text only, never markup from data ----
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function num(value) { return typeof value === "number" && isFinite(value) ? value : null; }
  function str(value) { return value === undefined || value === null ? "" : String(value); }
  function stateOf(value) { return Object.prototype.hasOwnProperty.call(STATE_WORDS, value) ? value : "unknown"; }

  // ---- formatting ----
  // By hand: toLocaleString builds an ICU formatter per call, seconds for a 10,000-gateway fleet.
  function fmtInt(value) {
    var n = num(value); if (n === null) return "–";
    var digits = String(Math.abs(Math.round(n))).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (n < 0 ? "-" : "") + digits;
  }
  function fmtBytes(value) {
    var n = num(value); if (n === null) return "–";
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1073741824) return (n / 1048576).toFixed(1) + " MiB";
    return (n / 1073741824).toFixed(2) + " GiB";
  }
  function fmtDuration(seconds) {
    var s = num(seconds); if (s === null) return "–";
    if (s < 0) s = 0;
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function parseTime(text) { var t = Date.parse(str(text)); return isNaN(t) ? null : t; }
  function fmtAgo(text) {
    var t = parseTime(text); if (t === null) return "–";
    return fmtDuration((Date.now() - t) / 1000) + " ago";
  }
  function fmtUTC(text) {
    var t = parseTime(text); if (t === null) return str(text) || "–";
    return new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function fmtRanges(ranges) {
    if (!Array.isArray(ranges)) return "";
    return ranges.map(function (r) {
      if (!r) return "";
      var span = r.first === r.last ? str(r.first) : str(r.first) + "–" + str(r.last);
      return "boot " + str(r.boot) + ": " + span;
    }).join(", ");
  }
  function fmtPairs(pairs) {
    if (!Array.isArray(pairs) || pairs.length === 0) return "none";
    var shown = pairs.slice(0, 12).map(function (p) {
      return Array.isArray(p) ? (p[0] === p[1] ? str(p[0]) : str(p[0]) + "–" + str(p[1])) : str(p);
    }).join(", ");
    return pairs.length > 12 ? shown + " … (" + pairs.length + " ranges)" : shown;
  }
  function stateBadge(state) {
    var s = stateOf(state);
    var badge = el("span", "state s-" + s, STATE_WORDS[s]);
    badge.setAttribute("data-state", s);
    return badge;
  }

  // ---- the fleet table ----
  function severity(g) {
    var lost = num(g.lost) || 0;
    return [lost > 0 ? 0 : 1, STATE_RANK[stateOf(g.state)], str(g.id)];
  }
  function compareGateways(a, b) {
    var x = severity(a), y = severity(b);
    if (x[0] !== y[0]) return x[0] - y[0];
    if (x[1] !== y[1]) return x[1] - y[1];
    return x[2] < y[2] ? -1 : x[2] > y[2] ? 1 : 0;
  }

  function replayCell(g, td) {
    var id = str(g.id);
    var backlog = g.backlog || {};
    var messages = num(backlog.messages) || 0;
    if (g.replaying && messages > 0) {
      var peak = Math.max(replayPeak.get(id) || 0, messages);
      replayPeak.set(id, peak);
      var done = peak > 0 ? 1 - messages / peak : 0;
      var bar = el("div", "bar"); var fill = el("div");
      fill.style.width = Math.round(done * 100) + "%";
      bar.appendChild(fill);
      var eta = num(backlog.eta_s);
      var rate = num(backlog.drain_rate_per_s);
      bar.title = fmtInt(peak - messages) + " of " + fmtInt(peak) + " sent since this page saw the replay start";
      add(td, el("div", null, "replaying · ETA " + (eta !== null ? fmtDuration(eta) : "unknown")), bar,
          el("div", "sub", fmtInt(messages) + " left" + (rate !== null ? " · " + rate.toFixed(rate < 10 ? 1 : 0) + " msg/s" : "")));
      td.setAttribute("data-replaying", "true");
    } else {
      replayPeak.delete(id);
      var state = stateOf(g.state);
      var text = messages > 0 ? (state === "online" ? "backlog, not draining" : "buffering on the gateway") : "–";
      add(td, el("span", messages > 0 ? "sub" : "zero", text));
      td.setAttribute("data-replaying", "false");
    }
  }

  function buildRow(g) {
    var id = str(g.id);
    var state = stateOf(g.state);
    var tr = el("tr", "gw");
    tr.setAttribute("data-gateway", id);
    tr.setAttribute("data-state", state);
    tr.setAttribute("data-lost", String(num(g.lost) || 0));
    if (selected === id) tr.classList.add("selected");
    function cell(field, className) { var td = el("td", className); td.setAttribute("data-field", field); tr.appendChild(td); return td; }

    var idCell = cell("gateway");
    add(idCell, el("div", "gw-id", id));
    var badges = el("div", "badges");
    if (g.continuity === "unknown") add(badges, el("span", "badge warn", "continuity unknown (sealed, no key)"));
    if ((num(g.seal_failures) || 0) > 0) add(badges, el("span", "badge bad", "seal failures " + fmtInt(g.seal_failures)));
    if ((num(g.duplicates) || 0) > 0) add(badges, el("span", "badge", "duplicates " + fmtInt(g.duplicates)));
    if ((num(g.polls_failed) || 0) > 0) add(badges, el("span", "badge warn", "polls failed " + fmtInt(g.polls_failed)));
    if (badges.childNodes.length) idCell.appendChild(badges);

    var stateCell = cell("state");
    add(stateCell, stateBadge(state));
    if (g.last_seen) {
      var seen = el("div", "sub", "seen " + fmtAgo(g.last_seen));
      seen.setAttribute("data-ago", str(g.last_seen)); seen.setAttribute("data-prefix", "seen ");
      stateCell.appendChild(seen);
    }

    var sinceCell = cell("since");
    var ago = el("div", null, fmtAgo(g.since));
    ago.setAttribute("data-ago", str(g.since));
    add(sinceCell, ago, el("div", "sub mono", fmtUTC(g.since)));

    var bootCell = cell("boot", "num");
    add(bootCell, el("div", null, fmtInt(g.boot)));
    if (num(g.session) !== null) add(bootCell, el("div", "sub", "session " + fmtInt(g.session)));

    var backlog = g.backlog || {};
    var backlogCell = cell("backlog");
    var messages = num(backlog.messages) || 0;
    backlogCell.setAttribute("data-messages", String(messages));
    if (messages > 0) {
      add(backlogCell, el("div", null, fmtInt(messages) + " msgs · " + fmtBytes(backlog.bytes)),
          el("div", "sub", "oldest " + fmtDuration(backlog.oldest_age_s)));
    } else {
      add(backlogCell, el("span", "zero", "empty"));
    }

    replayCell(g, cell("replay"));

    var dropped = num(g.dropped) || 0;
    var droppedCell = cell("dropped", "num");
    add(droppedCell, el("span", dropped > 0 ? "dropped" : "zero", fmtInt(dropped)));
    if (dropped > 0) add(droppedCell, el("div", "sub", "reported"));

    var lost = num(g.lost) || 0;
    var lostCell = cell("lost", "num lost-cell" + (lost > 0 ? " nonzero" : ""));
    if (lost > 0) {
      add(lostCell, el("span", "lost-big", "LOST " + fmtInt(lost)));
      var ranges = fmtRanges(g.lost_ranges);
      if (ranges) add(lostCell, el("div", "ranges", ranges));
    } else if (g.continuity === "unknown") {
      add(lostCell, el("span", "sub", "unknown"));
    } else {
      add(lostCell, el("span", "zero", "0"));
    }

    var devicesCell = cell("devices");
    var chips = el("div", "devices");
    (Array.isArray(g.devices) ? g.devices : []).forEach(function (d) {
      if (!d) return;
      var dstate = d.state === "online" ? "online" : d.state === "offline" ? "offline" : "unknown";
      var chip = el("span", "device", str(d.name));
      chip.setAttribute("data-device", str(d.name));
      chip.setAttribute("data-state", dstate);
      chip.title = str(d.name) + ": " + dstate + (d.since ? " since " + fmtUTC(d.since) : "") + (d.error ? "\n" + str(d.error) : "");
      chips.appendChild(chip);
    });
    if (!chips.childNodes.length) add(chips, el("span", "zero", "none reported"));
    devicesCell.appendChild(chips);
    (Array.isArray(g.devices) ? g.devices : []).forEach(function (d) {
      if (d && d.error) add(devicesCell, el("span", "device-error", str(d.name) + ": " + str(d.error)));
    });

    tr.addEventListener("click", function () { select(id); });
    return tr;
  }

  function refreshAgo(root) {
    var nodes = root.querySelectorAll("[data-ago]");
    for (var i = 0; i < nodes.length; i++) {
      var text = (nodes[i].getAttribute("data-prefix") || "") + fmtAgo(nodes[i].getAttribute("data-ago"));
      // Only what changed: every write makes the browser lay the table out again.
      if (nodes[i].textContent !== text) nodes[i].textContent = text;
    }
  }

  function renderTotals(totals, gateways) {
    totalsBox.textContent = "";
    var t = totals || {};
    [["gateways", "gateways", ""], ["online", "online", "t-online"], ["offline", "offline", "t-offline"],
     ["stale", "stale", "t-stale"], ["lost", "lost msgs", "t-lost"]].forEach(function (spec) {
      var value = num(t[spec[0]]);
      var box = el("span", "total " + spec[2] + ((value || 0) > 0 ? " nonzero" : ""));
      box.setAttribute("data-total", spec[0]);
      add(box, el("b", null, fmtInt(value)), document.createTextNode(spec[1]));
      totalsBox.appendChild(box);
    });
    var losing = gateways.filter(function (g) { return (num(g.lost) || 0) > 0; });
    if (losing.length) {
      lostBanner.textContent = "DATA LOST on " + losing.length + (losing.length === 1 ? " gateway: " : " gateways: ") +
        losing.slice(0, 8).map(function (g) { return str(g.id) + " (" + fmtInt(g.lost) + ")"; }).join(", ") +
        (losing.length > 8 ? " …" : "");
      lostBanner.classList.add("shown");
    } else {
      lostBanner.textContent = "";
      lostBanner.classList.remove("shown");
    }
  }

  function renderFleet(fleet) {
    var gateways = Array.isArray(fleet.gateways) ? fleet.gateways.filter(function (g) { return g && g.id !== undefined; }) : [];
    renderTotals(fleet.totals, gateways);
    gateways.sort(compareGateways);
    var needle = filterInput.value.trim().toLowerCase();
    var matching = needle === "" ? gateways : gateways.filter(function (g) { return str(g.id).toLowerCase().indexOf(needle) >= 0; });
    // A table of thousands of rows helps nobody and costs the browser seconds a poll:
    // the first MAX_ROWS, problems first, and the filter for the rest.
    var shown = matching.slice(0, MAX_ROWS);
    var keep = new Set();
    var previous = null;
    shown.forEach(function (g) {
      var id = str(g.id);
      keep.add(id);
      var key = JSON.stringify(g);
      var entry = rows.get(id);
      if (!entry || entry.key !== key) {
        var row = buildRow(g);
        if (entry) fleetBody.replaceChild(row, entry.row);
        entry = { row: row, key: key };
        rows.set(id, entry);
      }
      var wanted = previous ? previous.nextSibling : fleetBody.firstChild;
      if (wanted !== entry.row) fleetBody.insertBefore(entry.row, wanted);
      previous = entry.row;
    });
    rows.forEach(function (entry, id) {
      if (!keep.has(id)) { entry.row.remove(); rows.delete(id); }
    });
    var present = new Set(gateways.map(function (g) { return str(g.id); }));
    replayPeak.forEach(function (peak, id) { if (!present.has(id)) replayPeak.delete(id); });
    refreshAgo(fleetBody);
    if (gateways.length === 0) {
      emptyNote.textContent = "No gateway seen yet. The monitor lists a gateway once its status, stats or data arrive.";
    } else if (matching.length === 0) {
      emptyNote.textContent = "No gateway id contains “" + needle + "”.";
    } else if (matching.length > shown.length) {
      emptyNote.textContent = "Showing " + fmtInt(shown.length) + " of " + fmtInt(matching.length) +
        " gateways, problems first. Filter by id to see the others.";
    } else {
      emptyNote.textContent = "";
    }
    emptyNote.hidden = emptyNote.textContent === "";
  }

  function setConnection(ok, message) {
    connection.setAttribute("data-connection", ok ? "live" : "unreachable");
    connection.textContent = message;
    document.body.classList.toggle("unreachable", !ok);
  }

  function pollFleet() {
    fetch("api/fleet", { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (fleet) {
        lastFleet = fleet; lastOK = Date.now();
        renderFleet(fleet);
        setConnection(true, "live · " + fmtUTC(fleet.generated_at));
        document.body.setAttribute("data-loaded", "true");
      })
      .catch(function (error) {
        setConnection(false, "monitor unreachable" + (lastOK ? " since " + fmtUTC(new Date(lastOK).toISOString()) : "") +
                             " (" + str(error && error.message) + ")");
      })
      .then(function () { setTimeout(pollFleet, POLL_MS); });
  }

  // ---- the detail panel ----
  function select(id) {
    selected = id;
    rows.forEach(function (entry, rowID) { entry.row.classList.toggle("selected", rowID === id); });
    if (id === null) {
      detail.hidden = true; detail.textContent = ""; detail.removeAttribute("data-gateway");
      if (location.hash) history.replaceState(null, "", location.pathname + location.search);
      return;
    }
    history.replaceState(null, "", "#gw=" + encodeURIComponent(id));
    detail.hidden = false;
    detail.setAttribute("data-gateway", id);
    detail.setAttribute("data-state", "loading");
    detail.textContent = "";
    add(detail, el("h2", null, id), el("p", "note", "loading…"));
    pollDetail();
  }

  function fact(list, name, value) { add(list, el("dt", null, name), el("dd", null, value)); }

  function renderDetail(g) {
    var id = str(g.id);
    detail.textContent = "";
    detail.setAttribute("data-state", stateOf(g.state));
    var close = el("button", null, "close ✕"); close.id = "detail-close";
    close.addEventListener("click", function () { select(null); });
    add(detail, close, el("h2", null, id), stateBadge(g.state));

    var facts = el("dl", "facts");
    var backlog = g.backlog || {};
    fact(facts, "since", fmtUTC(g.since) + " (" + fmtAgo(g.since) + ")");
    fact(facts, "last seen", fmtUTC(g.last_seen) + " (" + fmtAgo(g.last_seen) + ")");
    fact(facts, "boot / session", fmtInt(g.boot) + " / " + fmtInt(g.session));
    fact(facts, "backlog", fmtInt(backlog.messages) + " msgs · " + fmtBytes(backlog.bytes) + " · oldest " + fmtDuration(backlog.oldest_age_s));
    fact(facts, "drain", (num(backlog.drain_rate_per_s) !== null ? num(backlog.drain_rate_per_s).toFixed(1) + " msg/s" : "–") +
                          " · ETA " + (num(backlog.eta_s) !== null ? fmtDuration(backlog.eta_s) : "–"));
    fact(facts, "dropped (reported)", fmtInt(g.dropped));
    fact(facts, "lost", fmtInt(g.lost));
    fact(facts, "duplicates", fmtInt(g.duplicates));
    fact(facts, "seal failures", fmtInt(g.seal_failures));
    fact(facts, "continuity", str(g.continuity) === "unknown" ? "unknown (AES-GCM sealed, no key here)" : "tracked");
    fact(facts, "polls failed", fmtInt(g.polls_failed));
    add(detail, el("h3", null, "Now"), facts);

    if ((num(g.lost) || 0) > 0) {
      add(detail, el("h3", null, "Lost ranges"), el("div", "ranges", fmtRanges(g.lost_ranges) || "–"));
    }

    var devices = Array.isArray(g.devices) ? g.devices : [];
    if (devices.length) {
      var dt = el("table"); var head = el("tr");
      ["device", "state", "since", "error"].forEach(function (h) { head.appendChild(el("th", null, h)); });
      dt.appendChild(head);
      devices.forEach(function (d) {
        if (!d) return;
        var tr = el("tr"); tr.setAttribute("data-device", str(d.name));
        add(tr, el("td", "mono", str(d.name)), el("td", null, str(d.state) || "unknown"),
            el("td", "sub", fmtAgo(d.since)), el("td", d.error ? "error-text" : "zero", d.error ? str(d.error) : "–"));
        dt.appendChild(tr);
      });
      add(detail, el("h3", null, "Devices"), dt);
    }

    var boots = Array.isArray(g.boots) ? g.boots : [];
    if (boots.length) {
      var bt = el("table"); var bh = el("tr");
      ["boot", "received", "committed up to", "dropped"].forEach(function (h) { bh.appendChild(el("th", null, h)); });
      bt.appendChild(bh);
      boots.forEach(function (b) {
        if (!b) return;
        var tr = el("tr"); tr.setAttribute("data-boot", str(b.boot));
        add(tr, el("td", "num", fmtInt(b.boot)), el("td", "mono", fmtPairs(b.received)),
            el("td", "num", fmtInt(b.highest_committed)), el("td", "mono", fmtPairs(b.gaps)));
        bt.appendChild(tr);
      });
      add(detail, el("h3", null, "Ledger per boot"), bt);
    }

    var events = Array.isArray(g.history) ? g.history : [];
    var list = el("ol"); list.id = "history";
    events.forEach(function (h) {
      if (!h) return;
      var kind = str(h.kind) || "event";
      var li = el("li"); li.setAttribute("data-kind", kind);
      var ts = el("span", "h-ts", fmtUTC(h.ts)); ts.title = str(h.ts);
      add(li, ts, el("span", "kind k-" + kind.replace(/[^a-z_]/g, ""), kind.replace(/_/g, " ")), el("span", "h-detail", str(h.detail)));
      list.appendChild(li);
    });
    add(detail, el("h3", null, "History (newest first)"), events.length ? list : el("p", "note", "No events recorded yet."));
  }

  function pollDetail() {
    if (detailTimer) { clearTimeout(detailTimer); detailTimer = null; }
    var id = selected;
    if (id === null) return;
    fetch("api/gateways/" + encodeURIComponent(id), { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 404) return { missing: true };
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (g) {
        if (selected !== id) return;
        if (g.missing) {
          detail.textContent = "";
          detail.setAttribute("data-state", "missing");
          var close = el("button", null, "close ✕"); close.id = "detail-close";
          close.addEventListener("click", function () { select(null); });
          add(detail, close, el("h2", null, id), el("p", "note", "The monitor does not know this gateway."));
        } else {
          renderDetail(g);
        }
      })
      .catch(function (error) {
        if (selected !== id) return;
        var note = detail.querySelector(".fetch-error") || detail.appendChild(el("p", "note error-text fetch-error"));
        note.textContent = "could not refresh: " + str(error && error.message);
      })
      .then(function () { if (selected === id) detailTimer = setTimeout(pollDetail, POLL_MS); });
  }

  filterInput.addEventListener("input", function () { if (lastFleet) renderFleet(lastFleet); });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape" && selected !== null) select(null); });

  var match = /^#gw=(.+)$/.exec(location.hash);
  if (match) { try { select(decodeURIComponent(match[1])); } catch (e) { /* a malformed hash selects nothing */ } }
  pollFleet();
})();
</script>
</body>
</html>
"""#
}
