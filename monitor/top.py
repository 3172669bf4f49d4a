"""errnomon top: a live terminal view of a running errnomon's error rates, read from its metrics endpoint.

    errnomon top [--url URL] [--interval SECONDS] [--once]

It only reads the Prometheus text exposition (and the latest error events, GET /errors) over HTTP, so it runs
on any machine and as any user: this module must not import bcc, nor any monitor module that does (it
imports only logs, cli, client and eventview, which do not).

Structure, so that everything but the terminal is testable without one:

- fetch(url) -> Result         one scrape: parsed samples and the latest events, or the reason it failed
- Tracker.update(result) -> Frame
                               per-second rates from the previous successful scrape, over the real time
                               elapsed between the two; a counter that went down (or a daemon that
                               restarted) is counted from zero, like Prometheus' rate()
- render(frame, width, height) -> [str]
                               pure: the lines of one screen, none wider than `width` cells, never wrapped
- run_curses() / run_once()    the terminal loop (q, Q, Ctrl-C, resize), or one plain-text frame
"""

import argparse
import collections
import json
import os
import signal
import sys
import threading
import time
import unicodedata

from prometheus_client.parser import text_string_to_metric_families

from . import client, eventview
from .logs import escape_controls

DEFAULT_URL = "http://127.0.0.1:9779/metrics"

SOCKET_ERRORS = "errnomon_socket_errors_total"
RESETS_RECEIVED = "errnomon_tcp_resets_received_total"
RESETS_SENT = "errnomon_tcp_resets_sent_total"
SIGPIPE = "errnomon_sigpipe_total"
# the counters whose samples are "series" in the header (the same set errnomon_series counts)
SERIES_METRICS = ("errnomon_socket_errors_total", "errnomon_socket_error_reports_total",
                  "errnomon_tcp_resets_received_total", "errnomon_tcp_resets_sent_total",
                  "errnomon_tcp_fins_sent_total", "errnomon_sigpipe_total", "errnomon_connect_failures_total")
HEALTH_METRICS = ("errnomon_probe_attached", "errnomon_dropped_total", "errnomon_series_overflow_total",
                  "errnomon_build_info", "process_start_time_seconds")

# Column: header, label name, whether it may be ellipsized first, its floor when it is, and its rank when
# columns have to be dropped to fit (lower goes first; None: never dropped).
Column = collections.namedtuple("Column", "header label shrink floor drop")

# Sections: title, metric, label columns, rows shown at most (None: whatever the height allows).
Section = collections.namedtuple("Section", "title metric columns limit")

SECTIONS = (
    Section("Socket errors returned to applications", SOCKET_ERRORS, (
        Column("ERRNO", "errno", False, 0, None),
        Column("OP", "op", False, 0, 1),
        Column("COMM", "comm", True, 6, None),
        Column("REMOTE", "remote", True, 7, 4),
        Column("PORT", "port", False, 0, 3),
    ), None),
    Section("Resets received", RESETS_RECEIVED, (
        Column("COMM", "comm", True, 6, None),
        Column("REMOTE", "remote", True, 7, 4),
        Column("PORT", "port", False, 0, 3),
        Column("STATE", "state", True, 8, None),
    ), 5),
    Section("Resets sent", RESETS_SENT, (
        Column("REASON", "reason", True, 10, None),
    ), 5),
    Section("SIGPIPE", SIGPIPE, (
        Column("COMM", "comm", True, 6, None),
        Column("ACTION", "action", False, 0, None),
    ), 5),
)
RATE_HEADER, TOTAL_HEADER = "RATE/s", "TOTAL"
EVENTS_SHOWN = 5  # the latest error events under the tables, newest first, where the height leaves room
TOTAL_DROP = 2  # TOTAL goes after OP, before PORT and REMOTE
RIGHT = ("port",)  # label columns aligned right, like the numbers
HARD_FLOOR = 3

Row = collections.namedtuple("Row", "cells rate total")  # rate is None until there are two scrapes


# ---------------------------------------------------------------------------------------------------------
# scraping and rates


class FetchError(Exception):
    pass


# samples: {name: {labels: value}}; events: the latest error events of GET /errors (None: none to show)
Result = collections.namedtuple("Result", "samples error mono wall events", defaults=(None,))


def normalize_url(url):
    """'host:port' -> 'http://host:port/metrics'; a URL with a path is kept as it is."""
    return client.normalize_url(url, "/metrics")


def parse(text):
    """{sample name: {labels as a sorted tuple of pairs: value}} for errnomon's counters and health metrics."""
    wanted = set(SERIES_METRICS) | set(HEALTH_METRICS)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def fetch(url, timeout=5.0, http=None, events_url=None):
    """One scrape (and, given events_url, the latest error events); never raises for what the network or
    the endpoint can do. An endpoint without /errors (an older errnomon) just shows no events."""
    http = http or client.Client()
    try:
        try:
            body = http.get(url, timeout=timeout)
        except client.ClientError as e:
            raise FetchError(str(e))
        try:
            samples = parse(body.decode("utf-8", "replace"))
        except Exception as e:  # the parser raises ValueError and friends on anything malformed
            raise FetchError("not a Prometheus text exposition (%s)" % (str(e).splitlines() or ["?"])[0])
        if "errnomon_build_info" not in samples:
            raise FetchError("no errnomon metrics there")
    except FetchError as e:
        message = escape_controls(" ".join(str(e).split()))  # one line, whatever the reason looked like
        return Result(None, message, time.monotonic(), time.time())
    events = None
    if events_url:
        try:
            payload = json.loads(http.get(events_url, timeout=timeout, accept="application/json"))
            events = [e for e in payload["events"] if isinstance(e, dict)]
        except (client.ClientError, ValueError, KeyError, TypeError):
            events = None
    return Result(samples, None, time.monotonic(), time.time(), events)


class Frame:
    """What one screen shows. sections: [(Section, [Row])]."""

    def __init__(self, url, interval, wall=None, sections=None, series=0, warnings=(), error=None,
                 rates=False, waiting=False, events=()):
        self.url = url
        self.interval = interval
        self.wall = wall
        self.sections = sections if sections is not None else [(s, []) for s in SECTIONS]
        self.series = series
        self.warnings = list(warnings)
        self.error = error
        self.rates = rates  # False until two scrapes
        self.waiting = waiting  # True before the first answer
        self.events = list(events)  # the latest error events, oldest first


def _start_time(samples):
    values = list(samples.get("process_start_time_seconds", {}).values())
    return values[0] if values else None


def compute_rates(prev, cur, elapsed):
    """{name: {labels: (rate per second or None, total)}} of cur's counters.

    prev is the previous successful scrape's samples (None for the first scrape: no rates yet). A series
    missing from prev is new: it counted from zero during `elapsed`. A value lower than before is a counter
    reset: the new value is what was counted since. So is every series when the daemon restarted.
    """
    restarted = prev is not None and _start_time(prev) != _start_time(cur)
    out = {}
    for name in SERIES_METRICS:
        before_all = {} if (prev is None or restarted) else prev.get(name, {})
        rated = {}
        for labels, value in cur.get(name, {}).items():
            if prev is None or elapsed <= 0:
                rate = None
            else:
                before = before_all.get(labels, 0.0)
                if value < before:
                    before = 0.0
                rate = (value - before) / elapsed
            rated[labels] = (rate, value)
        out[name] = rated
    return out


def group_rows(rated, section):
    """The section's rows: its metric's series summed over the labels it does not show (pid, unit, ...),
    sorted by rate, then total, both descending."""
    keys = [c.label for c in section.columns]
    groups = {}
    for labels, (rate, total) in rated.get(section.metric, {}).items():
        d = dict(labels)
        key = tuple(d.get(k, "") for k in keys)
        if key in groups:
            r0, t0 = groups[key]
            rate = None if r0 is None or rate is None else r0 + rate
            total += t0
        groups[key] = (rate, total)
    return sort_rows([Row(k, r, t) for k, (r, t) in groups.items()])


def sort_rows(rows):
    return sorted(rows, key=lambda r: (-(r.rate or 0.0), -r.total, r.cells))


def health(samples):
    warnings = []
    missing = sorted(dict(k).get("probe", "?") for k, v in samples.get("errnomon_probe_attached", {}).items()
                     if v == 0)
    if missing:
        warnings.append("%d probe%s not attached (%s)" % (len(missing), "" if len(missing) == 1 else "s",
                                                         ", ".join(missing)))
    dropped = sum(samples.get("errnomon_dropped_total", {}).values())
    if dropped > 0:
        warnings.append("%s counts dropped (kernel map full)" % fmt_total(dropped))
    folded = sum(samples.get("errnomon_series_overflow_total", {}).values())
    if folded > 0:
        warnings.append("%s folded into remote=other (series budget)" % fmt_total(folded))
    return warnings


class Tracker:
    """Turns successive scrape results into frames; keeps the previous successful scrape for the rates."""

    def __init__(self, url, interval):
        self.url = url
        self.interval = interval
        self.prev = None  # (samples, monotonic time)
        self.frame = Frame(url, interval, waiting=True)

    def update(self, result):
        if result.error is not None:
            f = self.frame
            self.frame = Frame(self.url, self.interval, result.wall, f.sections, f.series, f.warnings,
                               result.error, f.rates, events=f.events)
            return self.frame
        prev_samples, elapsed = (None, 0.0) if self.prev is None else (self.prev[0], result.mono - self.prev[1])
        rated = compute_rates(prev_samples, result.samples, elapsed)
        self.prev = (result.samples, result.mono)
        series = sum(len(rated[name]) for name in SERIES_METRICS)
        self.frame = Frame(self.url, self.interval, result.wall, [(s, group_rows(rated, s)) for s in SECTIONS],
                           series, health(result.samples), None, prev_samples is not None,
                           events=result.events or ())
        return self.frame


# ---------------------------------------------------------------------------------------------------------
# rendering: pure functions of (frame, width, height)


def fmt_rate(rate):
    if rate is None:
        return "-"
    if rate == 0:
        return "0"
    if rate < 10:
        return "%.2f" % rate
    if rate < 1000:
        return "%.1f" % rate
    return "%.0f" % rate


def fmt_total(value):
    return "%d" % value if float(value).is_integer() else "%.6g" % value


def cells(s):
    """Terminal cells `s` takes (wide East Asian characters take two, combining marks none)."""
    n = 0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def clean(value, ascii_only=False):
    """A label value as it can be shown: control characters (terminal escapes) become '?', '' becomes '-'."""
    if value == "":
        return "-"
    out = []
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or (ascii_only and ord(ch) > 126):
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def cut(s, width, ellipsis="…"):
    """s in at most `width` cells, the end replaced by the ellipsis when it had to be shortened."""
    if width <= 0:
        return ""
    if cells(s) <= width:
        return s
    keep = width - cells(ellipsis)
    if keep < 1:
        return _take(s, width)
    return _take(s, keep) + ellipsis


def _take(s, width):
    out, n = [], 0
    for ch in s:
        w = 0 if unicodedata.combining(ch) else (2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1)
        if n + w > width:
            break
        out.append(ch)
        n += w
    return "".join(out)


def _pad(s, width, right):
    gap = " " * max(0, width - cells(s))
    return gap + s if right else s + gap


def _shrink(widths, candidates, floor, over):
    """Take cells from the widest candidate first until nothing is over, or every candidate is at its floor."""
    while over() > 0:
        movable = [i for i in candidates if widths[i] > floor(i)]
        if not movable:
            return
        i = max(movable, key=lambda j: (widths[j], j))
        widths[i] -= 1


def layout(columns, naturals, width):
    """(visible column indexes, {index: width}, separator) for a table in `width` cells.

    columns: Column-like tuples (shrink, floor, drop); naturals: the width each column would like.
    In order, until it fits: ellipsize the shrinkable columns (widest first) down to their floor; narrow
    the separator to one space; drop columns by rank; then squeeze every text column to HARD_FLOOR.
    The caller still cuts each line at `width`, for terminals narrower than even that.
    """
    droppable = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop is not None)
    for n in range(len(droppable) + 1):
        gone = {i for _, i in droppable[:n]}
        vis = [i for i in range(len(columns)) if i not in gone]
        widths = {i: naturals[i] for i in vis}
        for sep in (2, 1):
            def over(sep=sep):
                return sum(widths.values()) + sep * (len(vis) - 1) - width
            _shrink(widths, [i for i in vis if columns[i].shrink], lambda i: min(columns[i].floor, naturals[i]),
                    over)
            if over() <= 0:
                return vis, widths, sep
    # every droppable column is gone (vis, widths from the last round) and it still does not fit
    def over_1():
        return sum(widths.values()) + (len(vis) - 1) - width
    _shrink(widths, [i for i in vis if columns[i].label is not None], lambda i: min(HARD_FLOOR, naturals[i]),
            over_1)
    return vis, widths, 1


def budget(main_rows, lower_wants, room):
    """(main table's row limit, [row limit of each lower section]) for `room` lines of rows.

    Everything when it fits (None: no limit). Otherwise the main table keeps half the room (at least 3
    lines), the lower sections share the rest a line at a time (at least one line each), and the main table
    takes back what they do not need."""
    if main_rows + sum(lower_wants) <= room:
        return None, list(lower_wants)
    main = min(main_rows, max(3, room // 2))
    left = max(room - main, 0)
    limits = [0] * len(lower_wants)
    while left > 0 and any(n < want for n, want in zip(limits, lower_wants)):
        for i, want in enumerate(lower_wants):
            if limits[i] < want and left > 0:
                limits[i] += 1
                left -= 1
    return main + left, [max(n, 1) if want else 0 for n, want in zip(limits, lower_wants)]


def table(section, rows, width, limit=None, ellipsis="…", ascii_only=False):
    """[(text, style)] for one section: a title line, a column header, and at most `limit` lines of rows, the
    last of them '… N more' when some had to be left out."""
    title = section.title
    if not rows:
        return [(cut(title + ": none", width, ellipsis), "title")]
    if limit is None or len(rows) <= limit:
        shown = rows
    else:
        shown = rows[:max(limit - 1, 1)]
    cols = list(section.columns) + [Column(RATE_HEADER, None, False, None, None),
                                    Column(TOTAL_HEADER, None, False, None, TOTAL_DROP)]
    body = [[clean(v, ascii_only) for v in r.cells] + [fmt_rate(r.rate), fmt_total(r.total)] for r in shown]
    naturals = [max([cells(c.header)] + [cells(b[i]) for b in body]) for i, c in enumerate(cols)]
    vis, widths, sep = layout(cols, naturals, width)
    right = [c.label is None or c.label in RIGHT for c in cols]

    def line(values):
        return (" " * sep).join(_pad(cut(values[i], widths[i], ellipsis), widths[i], right[i]) for i in vis)

    out = [(cut(title, width, ellipsis), "title"),
           (cut(line([c.header for c in cols]).rstrip(), width, ellipsis), "head")]
    for r, b in zip(shown, body):
        out.append((cut(line(b).rstrip(), width, ellipsis), "hot" if r.rate else ""))
    if len(shown) < len(rows) and (limit or 0) >= 2:
        out.append((cut("… %d more" % (len(rows) - len(shown)) if ellipsis == "…"
                        else "... %d more" % (len(rows) - len(shown)), width, ellipsis), "dim"))
    return out


def render_styled(frame, width, height=None, ascii_only=False):
    """[(text, style)]: the screen for `frame` in `width` cells (and `height` lines if given).

    style is one of '', 'title', 'head', 'hot' (a row whose rate is above 0), 'warn', 'dim'."""
    width = max(width, 1)
    ell = "~" if ascii_only else "…"
    when = time.strftime("%H:%M:%S", time.localtime(frame.wall)) if frame.wall else "--:--:--"
    head = "errnomon top  %s  %d series  every %gs  q: quit  %s" % (when, frame.series, frame.interval, frame.url)
    out = [(cut(head, width, ell), "title")]
    if frame.error:
        status = ("! cannot read %s: %s: is errnomon running? pass --url (retrying every %gs)"
                  % (frame.url, frame.error, frame.interval), "warn")
    elif frame.waiting:
        status = ("connecting to %s ..." % frame.url, "dim")
    elif frame.warnings:
        status = ("! " + "; ".join(frame.warnings), "warn")
    elif not frame.rates:
        status = ("rates appear after the second scrape, in %gs" % frame.interval, "dim")
    else:
        status = ("all probes attached, no counts dropped", "dim")
    out.append((cut(clean(status[0], ascii_only), width, ell), status[1]))

    (main, main_rows), rest = frame.sections[0], frame.sections[1:]
    main_limit, limits = None, [section.limit for section, _ in rest]
    latest = list(reversed(frame.events))[:EVENTS_SHOWN]
    if height is not None:
        # the latest errors only where the tables leave room for them
        spare = height - len(out) - 3 - sum(3 if rows else 2 for _, rows in rest) - len(main_rows) - sum(
            min(len(rows), s.limit) for s, rows in rest)
        latest = latest[:max(spare - 2, 0)]
        # what is left for rows once the header, the titles and the column headers are drawn
        room = height - len(out) - 3 - sum(3 if rows else 2 for _, rows in rest) - (len(latest) + 2 if latest else 0)
        main_limit, limits = budget(len(main_rows), [min(len(rows), s.limit) for s, rows in rest], room)
    out.append(("", ""))
    out.extend(table(main, main_rows, width, main_limit, ell, ascii_only))
    for (section, rows), limit in zip(rest, limits):
        out.append(("", ""))
        out.extend(table(section, rows, width, limit, ell, ascii_only))
    if latest:
        out.append(("", ""))
        out.append((cut("Latest errors (errnomon errors -f for all)", width, ell), "title"))
        for e in latest:
            out.append((cut(clean(eventview.format_line(e, date=False), ascii_only), width, ell), ""))
    if height is not None:
        out = out[:max(height, 0)]
    return out


def render(frame, width, height=None, ascii_only=False):
    """The screen's lines as plain text: none longer than `width` cells."""
    return [text for text, _ in render_styled(frame, width, height, ascii_only)]


# ---------------------------------------------------------------------------------------------------------
# the terminal


class Fetcher(threading.Thread):
    """Scrapes every `interval` seconds in the background, so that q works even while a scrape hangs."""

    def __init__(self, url, interval, http=None):
        super().__init__(name="errnomon-top-fetch", daemon=True)
        self.http = http
        self.url = url
        self.interval = interval
        self.lock = threading.Lock()
        self.results = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            result = fetch(self.url, max(5.0, self.interval), self.http, events_url(self.url))
            with self.lock:
                self.results.append(result)
            self.stopping.wait(max(0.0, started + self.interval - time.monotonic()))

    def take(self):
        with self.lock:
            results, self.results = self.results, []
        return results


def _styles(curses):
    styles = {"": curses.A_NORMAL, "title": curses.A_BOLD, "head": curses.A_REVERSE, "hot": curses.A_BOLD,
              "warn": curses.A_BOLD, "dim": curses.A_DIM}
    try:
        if curses.has_colors():
            curses.start_color()
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_RED, -1)
            curses.init_pair(2, curses.COLOR_YELLOW, -1)
            styles["warn"] = curses.color_pair(1) | curses.A_BOLD
            styles["hot"] = curses.color_pair(2) | curses.A_BOLD
    except curses.error:
        pass
    return styles


def _draw(curses, screen, frame, styles, ascii_only):
    height, width = screen.getmaxyx()
    screen.erase()
    for y, (text, style) in enumerate(render_styled(frame, width, height, ascii_only)):
        try:
            screen.addstr(y, 0, text, styles.get(style, 0))
        except curses.error:
            pass  # the bottom-right cell: curses writes it, then complains it cannot move the cursor on
    screen.noutrefresh()
    curses.doupdate()


def events_url(url):
    return client.sibling_url(url, "/errors", "limit=%d" % EVENTS_SHOWN)


def _loop(screen, url, interval, ascii_only, http=None):
    import curses
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    styles = _styles(curses)
    screen.timeout(100)
    tracker = Tracker(url, interval)
    fetcher = Fetcher(url, interval, http)
    fetcher.start()
    dirty = True
    try:
        while True:
            for result in fetcher.take():
                tracker.update(result)
                dirty = True
            if dirty:
                _draw(curses, screen, tracker.frame, styles, ascii_only)
                dirty = False
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return 0
            if key == curses.KEY_RESIZE:
                curses.update_lines_cols()
                screen.clear()
                dirty = True
            elif key == 12:  # Ctrl-L
                screen.clear()
                dirty = True
    finally:
        fetcher.stopping.set()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_curses(url, interval, http=None):
    try:
        import curses
        import locale
    except ImportError as e:
        print("errnomon: error: cannot start the terminal view: %s: use --once" % e, file=sys.stderr)
        return 2
    locale.setlocale(locale.LC_ALL, "")
    # LINES and COLUMNS in the environment (some shells and tools export them) would pin curses to that size
    # and make it ignore resizes: always ask the terminal
    os.environ.pop("LINES", None)
    os.environ.pop("COLUMNS", None)
    ascii_only = "utf" not in (locale.getpreferredencoding(False) or "").lower().replace("-", "")
    signal.signal(signal.SIGTERM, _interrupt)  # kill: restore the terminal too
    try:
        return curses.wrapper(_loop, url, interval, ascii_only, http)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: curses.wrapper has already restored the terminal
        return 0
    except curses.error as e:
        print("errnomon: error: cannot start the terminal view: %s: is this a terminal? use --once" % e,
              file=sys.stderr)
        return 2


def run_once(url, interval, width, out=None, http=None):
    """Two scrapes `interval` apart, then one frame as plain text. 2 and one line on stderr on failure."""
    out = out or sys.stdout
    tracker = Tracker(url, interval)
    for n in range(2):
        if n:
            time.sleep(interval)
        result = fetch(url, max(5.0, interval), http, events_url(url))
        if result.error is not None:
            print("errnomon: error: cannot read %s: %s: is errnomon running? pass --url" % (url, result.error),
                  file=sys.stderr)
            return 2
        tracker.update(result)
    encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
    for line in render(tracker.frame, width, ascii_only="utf" not in encoding):
        out.write(line + "\n")
    out.flush()
    return 0


def check_url(url):
    """None if `url` (normalized) is an http(s) URL urllib can open, else what is wrong (one line)."""
    return client.check_url(url, DEFAULT_URL)


def build_parser():
    from .cli import ArgumentParser  # one-line usage errors; cli imports nothing that needs bcc
    p = ArgumentParser(
        prog="errnomon top", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Live view of a running errnomon: error rates by errno, process, peer and port, resets\n"
                    "and SIGPIPE, refreshed every --interval seconds and sorted by rate. q or Ctrl-C quits.\n"
                    "Needs no privileges and no bcc: it only reads errnomon's metrics endpoint.",
        epilog="examples:\n"
               "  errnomon top\n"
               "  errnomon top --url http://10.0.0.5:9779/metrics --interval 2\n"
               "  errnomon top --once    # one plain-text frame, rates over --interval, for scripts\n")
    p.add_argument("--url", default=DEFAULT_URL,
                   help="errnomon's metrics URL; 'host:port' means http://host:port/metrics (default: %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between scrapes (default: %(default)g)")
    p.add_argument("--once", action="store_true",
                   help="print one frame as plain text, rates over two scrapes --interval apart, and exit")
    client.add_arguments(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not (0.1 <= args.interval <= 3600):
        print("errnomon: error: --interval %g is out of range: give 0.1 to 3600 seconds" % args.interval,
              file=sys.stderr)
        return 2
    try:
        url = normalize_url(args.url)
    except ValueError as e:
        url, problem = args.url, "--url %r is not a URL (%s): use e.g. http://127.0.0.1:9779/metrics" % (args.url, e)
    else:
        problem = check_url(url)
    if not problem:
        http, problem = client.options(args)
    if problem:
        print("errnomon: error: " + escape_controls(problem), file=sys.stderr)
        return 2
    if args.once:
        import shutil
        return run_once(url, args.interval, shutil.get_terminal_size().columns, http=http)
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        print("errnomon: error: errnomon top needs a terminal: use --once for plain text", file=sys.stderr)
        return 2
    return run_curses(url, args.interval, http)


if __name__ == "__main__":
    sys.exit(main())
