"""errnomon errors: print a running errnomon's recent error events (GET /errors), and with --follow keep
printing new ones as they come, as text lines or JSON lines.

    errnomon errors [--url URL] [--follow] [--json] [--comm C] [--remote IP|CIDR] [--port N] [--errno E]
                    [--since 5m] [--limit N]

Like top it only reads HTTP, so it runs as any user and needs no bcc: this module imports no monitor
module that does. Following asks for the events after the newest one seen (?after=seq); a daemon that
restarted (its newest seq went down) is followed from its first event, with a note on stderr.
"""

import argparse
import json
import sys
import time
import urllib.parse

from . import client, eventview
from .logs import escape_controls

DEFAULT_URL = "http://127.0.0.1:9779/errors"
EXAMPLE = DEFAULT_URL
PAGE = 1000  # events asked for per poll while following; a full page is followed at once by the next


def build_parser():
    from .cli import ArgumentParser  # one-line usage errors; cli imports nothing that needs bcc
    p = ArgumentParser(
        prog="errnomon errors", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The latest socket errors a running errnomon saw, one per line, with the connection's\n"
                    "facts (age, idle time, bytes, retransmissions, the peer's FIN) and the likely cause.\n"
                    "Needs no privileges and no bcc: it reads errnomon's GET /errors.",
        epilog="examples:\n"
               "  errnomon errors                      # the last 20 errors\n"
               "  errnomon errors -f --comm nginx      # follow nginx's errors as they happen\n"
               "  errnomon errors --errno ECONNRESET --since 1h --json | jq .explanation\n"
               "  errnomon errors --url https://node1:9779/errors --ca-file ca.pem --username ops "
               "--password-file pw\n")
    p.add_argument("--url", default=DEFAULT_URL,
                   help="errnomon's /errors URL; 'host:port' means http://host:port/errors (default: %(default)s)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new errors until interrupted")
    p.add_argument("--json", action="store_true", help="one JSON object per line (the fields of GET /errors)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between polls with --follow (default: %(default)g)")
    g = p.add_argument_group("filters (combined; the daemon applies them)")
    g.add_argument("--comm", help="process name, exactly")
    g.add_argument("--remote", help="remote address or CIDR, e.g. 10.0.0.0/8")
    g.add_argument("--port", help="service port")
    g.add_argument("--errno", help="errno name or number, e.g. ECONNRESET")
    g.add_argument("--since", help="only errors newer than this: unix seconds, or a duration like 30s, 5m, 1h")
    g.add_argument("--limit", type=int, default=20, help="errors printed at first (default: %(default)s)")
    client.add_arguments(p)
    return p


def query_url(base, args, after=None, limit=None):
    params = [(k, getattr(args, k)) for k in ("comm", "remote", "port", "errno", "since")
              if getattr(args, k) not in (None, "")]
    if after is not None:
        params.append(("after", str(after)))
    params.append(("limit", str(limit if limit is not None else args.limit)))
    parts = urllib.parse.urlsplit(base)
    query = "&".join(x for x in (parts.query, urllib.parse.urlencode(params)) if x)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def read(http, url, timeout):
    """The payload of one GET /errors, or raises ClientError with a one-line reason."""
    body = http.get(url, timeout=timeout, accept="application/json")
    try:
        payload = json.loads(body.decode("utf-8", "replace"))
    except ValueError as e:
        raise client.ClientError("not errnomon's /errors JSON (%s)" % e)
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise client.ClientError("not errnomon's /errors JSON (no events list)")
    return payload


def newest(payload, events):
    """The newest seq the daemon has assigned (last_seq if it says so, else the newest event shown)."""
    seqs = [e.get("seq") for e in events if isinstance(e.get("seq"), int)]
    last = payload.get("last_seq")
    return last if isinstance(last, int) else (max(seqs) if seqs else None)


class Printer:
    def __init__(self, out, as_json):
        self.out = out
        self.as_json = as_json

    def show(self, events):
        for e in events:
            if self.as_json:
                self.out.write(json.dumps(e, sort_keys=True, ensure_ascii=True) + "\n")
            else:
                self.out.write(eventview.format_line(e) + "\n")
        self.out.flush()


def follow(http, base, args, printer, err, sleep=time.sleep, polls=None):
    """Print the first page, then poll for what came after it. polls: stop after that many (tests)."""
    timeout = max(5.0, args.interval)
    after, failing, n = None, None, 0
    while polls is None or n < polls:
        n += 1
        try:
            if after is None:
                payload = read(http, query_url(base, args), timeout)
            else:
                payload = read(http, query_url(base, args, after=after, limit=PAGE), timeout)
        except client.ClientError as e:
            if not args.follow or e.status == 400:  # a filter the daemon refuses will not get better
                err.write("errnomon: error: cannot read %s: %s: is errnomon running? pass --url\n"
                          % (base, escape_controls(str(e))))
                return 2
            if failing != str(e):
                err.write("errnomon errors: cannot read %s: %s (retrying every %gs)\n"
                          % (base, escape_controls(str(e)), args.interval))
                err.flush()
            failing = str(e)
            sleep(args.interval)
            continue
        if failing is not None:
            err.write("errnomon errors: reading %s again\n" % base)
            err.flush()
            failing = None
        events = [e for e in payload["events"] if isinstance(e, dict)]
        last = newest(payload, events)
        if after is not None and last is not None and last < after:
            err.write("errnomon errors: the daemon restarted (its newest event is #%d, after #%d): "
                      "following it from its first event\n" % (last, after))
            err.flush()
            after = 0
            continue
        printer.show(e for e in events if after is None or e.get("seq", 0) > after)
        seqs = [e["seq"] for e in events if isinstance(e.get("seq"), int)]
        known = [last] if last is not None else []
        if after is not None and len(events) >= PAGE:
            after = max(seqs + [after])  # a full page: ask at once for the rest after it
        else:
            after = max(seqs + known + [after or 0])
        if not args.follow:
            return 0
        if len(events) < PAGE:
            sleep(args.interval)
    return 0


def main(argv=None, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    if not (0.1 <= args.interval <= 3600):
        err.write("errnomon: error: --interval %g is out of range: give 0.1 to 3600 seconds\n" % args.interval)
        return 2
    if not (1 <= args.limit <= 100000):
        err.write("errnomon: error: --limit %d is out of range: give 1 to 100000\n" % args.limit)
        return 2
    try:
        base = client.normalize_url(args.url, "/errors")
        problem = client.check_url(base, EXAMPLE)
    except ValueError as e:
        base, problem = args.url, "--url %r is not a URL (%s): use e.g. %s" % (args.url, e, EXAMPLE)
    if problem:
        err.write("errnomon: error: " + escape_controls(problem) + "\n")
        return 2
    http, problem = client.options(args)
    if problem:
        err.write("errnomon: error: " + escape_controls(problem) + "\n")
        return 2
    try:
        return follow(http, base, args, Printer(out, args.json), err)
    except KeyboardInterrupt:
        return 0
