"""``/status``: one self-contained HTML page over ``/status.json``.

No external asset (no CDN, no font, no image): the page works on an
air-gapped host and leaks nothing to a third party. One inline style and
one inline script; the ``Content-Security-Policy`` allows exactly those two
(their SHA-256 hashes, computed here at import from the very texts sent)
and same-origin ``fetch`` of ``status.json``, and nothing else: no other
script, no inline event handler, no frame, no form.

Request paths are attacker-controlled (anyone can send ``GET /<script>``):
the script inserts every value with ``textContent`` and builds elements
with ``createElement``, never ``innerHTML``, so a path is always text. The
CSP is the second line of defence should that ever slip.

The page refreshes itself every ``REFRESH_SECONDS``: a scoreboard (one
cell per worker, coloured by state), then the workers, busy ones first and
among them the oldest request first, then every request in flight oldest
first, then the recent exits. It reads on a laptop and, with the less
useful columns hidden below 600 px, on a phone.
"""

from __future__ import annotations

import base64
import hashlib

REFRESH_SECONDS = 2

STYLE = """
:root{color-scheme:light dark;--busy:#d9480f;--idle:#2f9e44;--boot:#1971c2;--stop:#868e96;
  --bg:#fff;--fg:#212529;--mute:#6c757d;--line:#dee2e6}
@media (prefers-color-scheme:dark){
  :root{--bg:#16181c;--fg:#e9ecef;--mute:#adb5bd;--line:#343a40}}
*{box-sizing:border-box}
body{margin:0;padding:12px;font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
  background:var(--bg);color:var(--fg)}
h1{font-size:18px;margin:0 0 8px}
h2{font-size:15px;margin:18px 0 6px}
.facts{display:flex;flex-wrap:wrap;gap:6px 18px;margin:0 0 10px;padding:0;list-style:none}
.facts li b{font-variant-numeric:tabular-nums}
.board{display:flex;flex-wrap:wrap;gap:4px;margin:8px 0}
.cell{min-width:44px;padding:4px 6px;border-radius:4px;color:#fff;
  font:12px/1.2 ui-monospace,monospace;text-align:center}
.s-busy{background:var(--busy)}.s-idle{background:var(--idle)}
.s-booting{background:var(--boot)}.s-stopping,.s-unknown,.s-exited{background:var(--stop)}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--mute);white-space:nowrap}
td.path{font-family:ui-monospace,monospace;word-break:break-all}
.mute{color:var(--mute)}
#err{color:var(--busy)}
@media (max-width:600px){body{padding:8px;font-size:13px}.wide{display:none}
  th,td{padding:3px 4px}}
"""

SCRIPT = """
"use strict";
const REFRESH = __REFRESH__ * 1000;
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function dash(v) {
  return v === null || v === undefined ? "-" : v;
}
function fmtSeconds(s) {
  if (s === null || s === undefined) return "-";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function fmtBytes(b) {
  return b === null || b === undefined ? "-" : (b / 1048576).toFixed(1) + " MiB";
}
function fmtCpu(c) {
  return c === null || c === undefined ? "-" : c.toFixed(1) + " s";
}
function oldest(w) {
  return w.requests.length ? w.requests[0].elapsed_seconds : -1;
}
function order(workers) {
  return workers.slice().sort(function (a, b) {
    const busyA = a.state === "busy" ? 0 : 1, busyB = b.state === "busy" ? 0 : 1;
    if (busyA !== busyB) return busyA - busyB;
    if (oldest(a) !== oldest(b)) return oldest(b) - oldest(a);
    return (a.slot === null ? 1e9 : a.slot) - (b.slot === null ? 1e9 : b.slot);
  });
}
function shown(r) {
  return r.path !== null && r.path !== undefined ? r.path : (r.route || "(path hidden)");
}
function row(cells, header) {
  const tr = el("tr");
  for (const c of cells) tr.appendChild(el(header ? "th" : "td", c[0], c[1]));
  return tr;
}
function table(head, rows) {
  const wrap = el("div", null, "wrap"), t = el("table");
  const thead = el("thead"), tbody = el("tbody");
  thead.appendChild(row(head, true));
  for (const r of rows) tbody.appendChild(row(r, false));
  t.appendChild(thead);
  t.appendChild(tbody);
  wrap.appendChild(t);
  return wrap;
}
function facts(m, busy) {
  const list = el("ul", null, "facts");
  const backlog = (m.listen_backlog || []).map(function (l) {
    return l.listener + " " + (l.backlog === null ? "n/a" : l.backlog);
  }).join(", ");
  const items = [
    ["master pid", m.pid], ["uptime", fmtSeconds(m.uptime_seconds)],
    ["class", m.worker_class], ["workers", m.workers_live + "/" + m.workers_desired],
    ["busy", busy + "/" + m.capacity], ["requests", dash(m.requests_total)],
    ["backlog", backlog || "-"], ["reloads", dash(m.reloads)]];
  for (const f of items) {
    const li = el("li", f[0] + " ");
    li.appendChild(el("b", f[1]));
    list.appendChild(li);
  }
  return list;
}
function workerRow(w) {
  const r = w.requests[0];
  return [[dash(w.slot)], [w.pid], [w.state], [dash(w.requests_served), "wide"],
    [fmtBytes(w.rss_bytes), "wide"], [fmtCpu(w.cpu_seconds), "wide"],
    [fmtSeconds(w.heartbeat_age_seconds), "wide"], [r ? r.method : ""],
    [r ? shown(r) : "", "path"], [r ? fmtSeconds(r.elapsed_seconds) : ""]];
}
function exitRow(e) {
  const flying = e.requests_in_flight || [];
  const code = e.signal || (e.exit_code === undefined ? "" : "exit " + e.exit_code);
  return [[new Date(e.time * 1000).toLocaleTimeString()], [e.pid], [e.reason], [code],
    [flying.length ? flying.length + ": " + shown(flying[0]) : "", "path"]];
}
function render(s) {
  const m = s.master, root = document.getElementById("root");
  const busy = s.workers.filter(function (w) { return w.state === "busy"; }).length;
  const board = el("div", null, "board");
  for (const w of order(s.workers)) {
    const cell = el("div", dash(w.slot) + " " + w.state, "cell s-" + w.state);
    cell.title = "pid " + w.pid;
    board.appendChild(cell);
  }
  const inFlight = [];
  for (const w of s.workers) for (const r of w.requests) inFlight.push([w, r]);
  inFlight.sort(function (a, b) { return b[1].elapsed_seconds - a[1].elapsed_seconds; });
  const requestRows = inFlight.map(function (p) {
    return [[fmtSeconds(p[1].elapsed_seconds)], [p[0].pid], [p[1].method],
      [shown(p[1]), "path"], [p[1].trace_id || "", "wide"]];
  });
  const parts = [el("h1", "gunicorn " + m.pid + " status"), facts(m, busy), board,
    el("h2", "Workers"),
    table([["slot"], ["pid"], ["state"], ["served", "wide"], ["RSS", "wide"],
      ["CPU", "wide"], ["heartbeat", "wide"], ["method"], ["oldest request"],
      ["elapsed"]], order(s.workers).map(workerRow)),
    el("h2", "Requests in flight (" + inFlight.length + ")"),
    table([["elapsed"], ["pid"], ["method"], ["path"], ["trace id", "wide"]], requestRows)];
  if (s.dirty_workers && s.dirty_workers.length) {
    parts.push(el("h2", "Dirty workers"));
    parts.push(table([["pid"], ["role"], ["RSS"], ["CPU"]], s.dirty_workers.map(function (w) {
      return [[w.pid], [w.role], [fmtBytes(w.rss_bytes)], [fmtCpu(w.cpu_seconds)]];
    })));
  }
  const exits = (s.recent_exits || []).slice(0, 20);
  parts.push(el("h2", "Recent exits (" + (s.recent_exits || []).length + ")"));
  parts.push(table([["time"], ["pid"], ["reason"], ["signal / code"], ["in flight"]],
    exits.map(exitRow)));
  if (!m.paths_shown) {
    parts.push(el("p", "Paths are hidden (the endpoint is not on loopback and has no " +
      "basic auth): routes are shown.", "mute"));
  }
  root.replaceChildren.apply(root, parts);
  document.getElementById("err").textContent = "";
  document.title = busy + " busy - gunicorn " + m.pid;
}
function refresh() {
  fetch("status.json", {cache: "no-store", credentials: "same-origin"})
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(render)
    .catch(function (e) {
      document.getElementById("err").textContent = "status.json: " + e.message;
    })
    .finally(function () { setTimeout(refresh, REFRESH); });
}
refresh();
""".replace("__REFRESH__", str(REFRESH_SECONDS))


def _hash(text: str) -> str:
    """The CSP source for an inline element's exact text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


STYLE_HASH = _hash(STYLE)
SCRIPT_HASH = _hash(SCRIPT)

CSP = (
    "default-src 'none'; "
    f"script-src {SCRIPT_HASH}; "
    f"style-src {STYLE_HASH}; "
    "connect-src 'self'; "
    "img-src 'none'; "
    "base-uri 'none'; "
    "form-action 'none'; "
    "frame-ancestors 'none'"
)

# Sent with the page: the CSP, and no sniffing, framing or referrer.
HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

PAGE = (
    "<!DOCTYPE html>\n"
    '<html lang="en"><head><meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>gunicorn status</title>\n"
    f"<style>{STYLE}</style>\n"
    "</head><body>\n"
    '<div id="err" role="status"></div>\n'
    '<main id="root"><p>Loading status.json\u2026</p></main>\n'
    f"<script>{SCRIPT}</script>\n"
    "</body></html>\n"
).encode()
