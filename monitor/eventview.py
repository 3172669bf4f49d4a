"""How an error event looks to a person: one text line (`errnomon errors`, top) or an HTML page (GET /errors
from a browser). Pure functions of the event dicts GET /errors serves (monitor/events.py documents the
fields); no bcc, no I/O.
"""

import html
import time
import urllib.parse

from .logs import escape_controls

# the query parameters of GET /errors, in the order the HTML form shows them: (name, label, size, hint)
FILTERS = (
    ("comm", "process", 14, "e.g. nginx"),
    ("remote", "remote", 18, "IP or CIDR"),
    ("port", "port", 6, "service port"),
    ("errno", "errno", 12, "e.g. ECONNRESET"),
    ("since", "since", 8, "e.g. 5m"),
    ("limit", "limit", 6, "rows"),
)

KIND_TEXT = {"socket_error": "error", "reset_received": "RST received", "reset_sent": "RST sent",
             "connect_failed": "connect failed"}


def clean(value):
    """A label value or comm from the kernel or a peer, safe on one terminal line."""
    return escape_controls(str(value))


def when(t, date=True):
    """Local time of a unix timestamp, to the millisecond."""
    if not isinstance(t, (int, float)):
        return "-"
    ms = int(round((t - int(t)) * 1000))
    if ms == 1000:
        t, ms = int(t) + 1, 0
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(int(t))) + ".%03d" % ms


def endpoint(addr, port):
    if not addr:
        return "-"
    addr = clean(addr)
    if ":" in addr and not addr.startswith("@") and not addr.startswith("/"):
        addr = "[%s]" % addr  # IPv6
    return "%s:%d" % (addr, port) if port else addr


def what(e):
    """What happened: 'recv ECONNRESET', 'RST received', 'RST sent (not_specified)', 'connect ECONNREFUSED'."""
    kind = e.get("kind", "")
    if kind == "socket_error":
        text = " ".join(x for x in (e.get("op"), e.get("errno")) if x)
    elif kind == "connect_failed":
        text = "connect " + (e.get("errno") or "failed")
    else:
        text = KIND_TEXT.get(kind, kind or "event")
    if e.get("reason"):
        text += " (%s)" % e["reason"]
    return clean(text)


def seconds(v):
    if v is None:
        return None
    if v < 1:
        return "%.0fms" % (v * 1000)
    if v < 100:
        return "%.1fs" % v
    return "%.0fs" % v


def size(n):
    if n is None:
        return None
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= step:
            return "%.1f%s" % (n / step, unit)
    return "%dB" % n


def facts(e):
    """[(name, value text)] of the connection facts the event carries (None values left out)."""
    out = []
    for name, text in (("age", seconds(e.get("age_s"))),
                       ("idle send", seconds(e.get("idle_send_s"))),
                       ("idle recv", seconds(e.get("idle_recv_s"))),
                       ("sent", size(e.get("bytes_sent"))),
                       ("received", size(e.get("bytes_received"))),
                       ("retrans", None if e.get("retrans") is None else str(e["retrans"])),
                       ("srtt", None if e.get("srtt_ms") is None else "%.2gms" % e["srtt_ms"])):
        if text is not None:
            out.append((name, text))
    if e.get("fin_received"):
        before = seconds(e.get("fin_before_s"))
        out.append(("peer FIN", before + " before" if before else "first"))
    if e.get("rst_ttl"):
        out.append(("RST TTL", "%d" % e["rst_ttl"] + (" (peer %d)" % e["peer_ttl"] if e.get("peer_ttl") else "")))
    elif e.get("peer_ttl"):
        out.append(("peer TTL", "%d" % e["peer_ttl"]))
    return out


def labels_text(e):
    return " ".join("%s=%s" % (clean(k), clean(v)) for k, v in sorted((e.get("labels") or {}).items()) if v)


def format_line(e, date=True):
    """One line for a terminal or a log: time, process, what, local > remote, state, facts, explanation."""
    who = "%s[%s]" % (clean(e.get("comm") or "?"), e.get("pid", "?"))
    labels = labels_text(e)
    if labels:
        who += " {%s}" % labels
    parts = [when(e.get("time"), date), who, what(e),
             "%s > %s" % (endpoint(e.get("local"), e.get("local_port")),
                          endpoint(e.get("remote"), e.get("remote_port")))]
    if e.get("state"):
        parts.append(clean(e["state"]))
    parts.extend("%s %s" % f for f in facts(e))
    line = " ".join(parts)
    if e.get("explanation"):
        line += " -- " + clean(e["explanation"])
    return line


def wants_html(accept, fmt=None):
    """Whether GET /errors answers HTML: ?format=html|json decides; else a browser's Accept (text/html
    preferred over JSON). curl's */* and API clients get JSON."""
    if fmt:
        return fmt == "html"
    best = {}
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        best[fields[0].lower()] = max(q, best.get(fields[0].lower(), 0.0))
    return best.get("text/html", 0.0) > max(best.get("application/json", 0.0), 0.0)


STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
form{margin:.6em 0;display:flex;flex-wrap:wrap;gap:.6em;align-items:end}
label{display:flex;flex-direction:column;font-size:.85em;color:#555}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top;white-space:nowrap}
td.why{white-space:normal;min-width:20em}
th{background:#f4f4f4;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}
"""


def html_page(payload, params, path="/errors"):
    """The page for a browser: a filter form (the same query parameters as the JSON), the newest events
    first, and what was dropped. params: the query as given ({name: value}), echoed into the form."""
    esc = html.escape
    events = list(reversed(payload.get("events") or []))
    dropped = payload.get("dropped") or {}
    refresh = params.get("refresh", "")
    head = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<title>errnomon: recent errors</title>', '<style>%s</style>' % STYLE]
    if refresh:
        head.append('<meta http-equiv="refresh" content="%s">' % esc(str(refresh)))
    body = ['</head><body>', '<h1>errnomon: recent socket errors</h1>']
    kept = payload.get("kept", len(events))
    lost = ", ".join("%s %s" % (esc(str(v)), esc(k.replace("_", " "))) for k, v in sorted(dropped.items()) if v)
    body.append('<p class="muted" id="summary">%d shown, %s kept%s. Counts in /metrics are exact whatever '
                'was dropped here.</p>' % (len(events), esc(str(kept)), "; not kept: " + lost if lost else ""))
    body.append('<form method="get" action="%s">' % esc(path))
    for name, label, width, hint in FILTERS + (("refresh", "refresh (s)", 4, "off"),):
        body.append('<label>%s<input name="%s" size="%d" placeholder="%s" value="%s"></label>'
                    % (esc(label), name, width, esc(hint), esc(str(params.get(name, "")))))
    body.append('<input type="hidden" name="format" value="html"><button type="submit">filter</button>')
    query = dict((k, v) for k, v in params.items() if v and k not in ("format", "refresh"))
    query["format"] = "json"
    body.append('<a href="%s?%s">JSON</a></form>' % (esc(path), esc(urllib.parse.urlencode(query))))
    cols = ("time", "process", "event", "local", "remote", "state", "age", "idle send", "idle recv", "sent",
            "received", "retrans", "srtt", "peer FIN", "why")
    body.append('<table id="events"><thead><tr>%s</tr></thead><tbody>'
                % "".join("<th>%s</th>" % esc(c) for c in cols))
    if not events:
        body.append('<tr><td colspan="%d" class="muted">no errors match</td></tr>' % len(cols))
    for e in events:
        f = dict(facts(e))
        who = esc(clean("%s[%s]" % (e.get("comm") or "?", e.get("pid", "?"))))
        labels = labels_text(e)
        if labels:
            who += '<br><span class="muted">%s</span>' % esc(labels)
        text = [when(e.get("time")), None, what(e), endpoint(e.get("local"), e.get("local_port")),
                endpoint(e.get("remote"), e.get("remote_port")), e.get("state") or ""]
        cells = [("", esc(clean(v)) if v is not None else who) for v in text]
        cells += [("num", esc(f.get(name, ""))) for name in cols[6:14]]
        cells.append(("why", esc(clean(e.get("explanation") or ""))))
        body.append('<tr data-seq="%s">%s</tr>' % (esc(str(e.get("seq", ""))), "".join(
            '<td%s>%s</td>' % (' class="%s"' % c if c else "", v) for c, v in cells)))
    body.append('</tbody></table></body></html>')
    return "\n".join(head + body) + "\n"
