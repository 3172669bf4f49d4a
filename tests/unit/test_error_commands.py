"""errnomon errors, the event lines and page (monitor/errorlog.py, eventview.py), top's latest-errors panel,
and the TLS/basic-auth flags both commands share (monitor/client.py), against real HTTP servers: a small
in-process /errors server that keeps the documented contract of GET /errors, and errnomon's own TLS server
for the client flags. No root needed. Ports from free_port()."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Gauge

from monitor import client, errorlog, eventview, top, web, webconfig

from .test_web_tls import certs  # noqa: F401 (the fixture)
from .tls_certs import PASSWORD, free_port, hashed

RESET = {"seq": 1, "time": 1765115521.25, "kind": "socket_error", "pid": 4242, "tid": 4243, "comm": "curl",
         "labels": {"unit": "api.service"}, "op": "recv", "errno": "ECONNRESET", "reason": "", "family": "ipv4",
         "local": "127.0.0.1", "local_port": 41000, "remote": "127.0.0.2", "remote_port": 8080, "port": 8080,
         "state": "CLOSE_WAIT", "age_s": 63.5, "idle_send_s": 61.2, "idle_recv_s": 3.1, "bytes_sent": 1200,
         "bytes_received": 34000, "retrans": 0, "srtt_ms": 0.05, "fin_received": True, "fin_before_s": 3.1,
         "explanation": "peer had closed 3.1 s earlier: a stale keep-alive connection"}


def event(seq, **kw):
    e = dict(RESET, seq=seq, time=RESET["time"] + seq)
    e.update(kw)
    return e


class Store:
    """The contract of GET /errors: newest last; without after, the newest `limit`; with after, the oldest
    `limit` after it; last_seq is the newest seq assigned, whatever the filters."""

    def __init__(self):
        self.events = []
        self.last = 0
        self.status = None  # (code, body) to answer instead
        self.queries = []

    def add(self, **kw):
        self.last += 1
        self.events.append(event(self.last, **kw))

    def answer(self, query):
        q = dict(urllib.parse.parse_qsl(query))
        self.queries.append(q)
        if self.status:
            return self.status
        match = [e for e in self.events if all(str(e.get(k)) == v for k, v in q.items()
                                                if k in ("comm", "errno", "port"))]
        limit = int(q.get("limit", 1000))
        if "after" in q:
            match = [e for e in match if e["seq"] > int(q["after"])][:limit]
        else:
            match = match[-limit:]
        return 200, json.dumps({"events": match, "kept": len(self.events), "last_seq": self.last,
                                "dropped": {"rate_limit": 0, "ring_full": 0}})


@contextlib.contextmanager
def errors_server(store):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            parts = urllib.parse.urlsplit(self.path)
            code, body = store.answer(parts.query) if parts.path == "/errors" else (404, "not found")
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if code == 200 else "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield "127.0.0.1:%d" % port
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_errors(argv):
    out, err = io.StringIO(), io.StringIO()
    before = signal.getsignal(signal.SIGPIPE)
    code = errorlog.main(argv, out, err)
    # In-process callers keep their SIGPIPE disposition: a CI run died when an earlier call here left SIG_DFL
    # behind and a later test's TLS server wrote to a client that had hung up.
    assert signal.getsignal(signal.SIGPIPE) == before
    return code, out.getvalue(), err.getvalue()


def test_errors_prints_the_latest_events_as_lines_with_their_facts_and_cause():
    store = Store()
    for _ in range(30):
        store.add()
    with errors_server(store) as address:
        code, out, err = run_errors(["--url", address, "--limit", "3"])
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert store.queries == [{"limit": "3"}]
    line = lines[-1]
    for part in ("curl[4242] {unit=api.service} recv ECONNRESET", "127.0.0.1:41000 > 127.0.0.2:8080",
                 "CLOSE_WAIT", "age 63.5s", "idle send 61.2s", "idle recv 3.1s", "sent 1.2kB",
                 "received 34.0kB", "retrans 0", "peer FIN 3.1s before",
                 "-- peer had closed 3.1 s earlier: a stale keep-alive connection"):
        assert part in line, (part, line)


def test_lines_give_the_reset_ttl_beside_the_peers():
    line = eventview.format_line(event(1, rst_ttl=64, peer_ttl=63, explanation="RST TTL 64, peer's 63: ..."))
    assert "retrans 0 srtt 0.05ms peer FIN 3.1s before RST TTL 64 (peer 63) -- RST TTL 64" in line
    assert "TTL" not in eventview.format_line(event(2, explanation=""))  # not seen: not shown
    assert " peer TTL 63" in eventview.format_line(event(3, peer_ttl=63))


def test_errors_json_lines_are_the_events_as_served_and_filters_reach_the_daemon():
    store = Store()
    store.add(comm="nginx")
    store.add(comm="curl")
    store.add(comm="nginx", errno="EPIPE", op="send")
    with errors_server(store) as address:
        code, out, err = run_errors(["--url", "http://%s/errors" % address, "--json", "--comm", "nginx",
                                     "--errno", "EPIPE", "--since", "5m"])
    assert code == 0, err
    assert [json.loads(x) for x in out.splitlines()] == [store.events[2]]
    assert store.queries == [{"comm": "nginx", "errno": "EPIPE", "since": "5m", "limit": "20"}]


def test_errors_into_head_ends_quietly_when_head_has_read_enough():
    """errnomon errors | head -2: the command ends at the broken pipe, with no traceback, like other tools."""
    store = Store()
    for _ in range(3000):
        store.add()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with errors_server(store) as address:
        cmd = ("%s -c 'from monitor import cli; import sys; sys.exit(cli.main(sys.argv[1:]))' "
               "errors --url %s --limit 3000 | head -2" % (sys.executable, address))
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=root, capture_output=True, text=True,
                              timeout=60)
    assert len(proc.stdout.splitlines()) == 2, proc.stdout
    assert proc.stderr == ""
    assert proc.returncode == 128 + signal.SIGPIPE  # killed by the pipe, as cat or grep would be


def test_follow_prints_each_new_event_once_in_order_and_pages_through_a_burst(monkeypatch):
    store = Store()
    store.add()
    monkeypatch.setattr(errorlog, "PAGE", 4)
    added = iter([0, 10, 0, 1])

    def sleep(_):
        for _ in range(next(added, 0)):
            store.add()

    with errors_server(store) as address:
        args = errorlog.build_parser().parse_args(["--url", address, "-f", "--json", "--interval", "0.1"])
        out, err = io.StringIO(), io.StringIO()
        errorlog.follow(client.Client(), client.normalize_url(address, "/errors"), args,
                        errorlog.Printer(out, True), err, sleep=sleep, polls=8)
    assert [json.loads(x)["seq"] for x in out.getvalue().splitlines()] == list(range(1, 13))
    assert err.getvalue() == ""


def test_follow_notices_a_restarted_daemon_and_follows_it_from_its_first_event():
    store = Store()
    for _ in range(5):
        store.add()
    steps = iter(["restart", "one"])

    def sleep(_):
        step = next(steps, None)
        if step == "restart":
            store.events, store.last = [], 0
            store.add(comm="after")
            store.add(comm="after")

    with errors_server(store) as address:
        args = errorlog.build_parser().parse_args(["--url", address, "-f", "--json"])
        out, err = io.StringIO(), io.StringIO()
        errorlog.follow(client.Client(), client.normalize_url(address, "/errors"), args,
                        errorlog.Printer(out, True), err, sleep=sleep, polls=4)
    got = [(e["seq"], e["comm"]) for e in map(json.loads, out.getvalue().splitlines())]
    assert got == [(n, "curl") for n in range(1, 6)] + [(1, "after"), (2, "after")]
    assert "the daemon restarted" in err.getvalue()


def test_follow_keeps_retrying_an_unreachable_daemon_with_one_line_and_a_bad_filter_ends_it():
    port = free_port()
    args = errorlog.build_parser().parse_args(["--url", "127.0.0.1:%d" % port, "-f"])
    err = io.StringIO()
    errorlog.follow(client.Client(), "http://127.0.0.1:%d/errors" % port, args, errorlog.Printer(io.StringIO(), False),
                    err, sleep=lambda _: None, polls=3)
    assert err.getvalue().splitlines() == [
        "errnomon errors: cannot read http://127.0.0.1:%d/errors: Connection refused (retrying every 1s)" % port]
    store = Store()
    store.status = (400, "bad errno 'ECONNRESETT': give an errno name like ECONNRESET or a number\n")
    with errors_server(store) as address:
        code, out, err = run_errors(["--url", address, "-f", "--errno", "ECONNRESETT"])
    assert code == 2 and out == ""
    assert err == ("errnomon: error: cannot read http://%s/errors: HTTP 400 Bad Request: bad errno 'ECONNRESETT': "
                   "give an errno name like ECONNRESET or a number: is errnomon running? pass --url\n" % address)


@pytest.mark.parametrize("argv,message", [
    (["--interval", "0"], "--interval 0 is out of range: give 0.1 to 3600 seconds"),
    (["--limit", "0"], "--limit 0 is out of range: give 1 to 100000"),
    (["--url", "ftp://x/errors"], "is not an http:// or https:// URL with a host"),
    (["--cert-file", "c.pem"], "--cert-file and --key-file go together: give both, or neither"),
    (["--username", "ops"], "--username needs --password-file"),
    (["--username", "ops", "--password-file", "/nonexistent/pw"], "--password-file /nonexistent/pw cannot be read"),
    (["--ca-file", "/nonexistent/ca.pem"], "--ca-file /nonexistent/ca.pem cannot be loaded"),
])
def test_bad_flags_are_one_line_and_status_2(argv, message):
    code, out, err = run_errors(argv)
    assert code == 2 and out == ""
    assert err.startswith("errnomon: error: ") and message in err and err.count("\n") == 1, err


def test_text_lines_escape_what_a_process_or_peer_chose():
    line = eventview.format_line(event(1, comm="evil\x1b[2J\n", labels={"pod": "p\rq"}))
    assert "\x1b" not in line and "\n" not in line and "\r" not in line
    assert "evil\\x1b[2J\\x0a" in line


def test_the_page_escapes_everything_and_echoes_the_filters():
    payload = {"events": [event(1), event(2, comm="<script>alert(1)</script>", explanation="a<b")],
               "kept": 2, "dropped": {"rate_limit": 7, "ring_full": 0}}
    page = eventview.html_page(payload, {"comm": '"><x>', "limit": "5"})
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'value="&quot;&gt;&lt;x&gt;"' in page
    assert "7 rate limit" in page
    assert page.index('data-seq="2"') < page.index('data-seq="1"')  # newest first


@pytest.mark.parametrize("accept,fmt,html", [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None, True),  # a browser
    ("*/*", None, False),  # curl
    ("application/json", None, False),
    ("", None, False),
    ("application/json;q=0.5, text/html", None, True),
    ("text/html;q=0.1, application/json", None, False),
    ("*/*", "html", True),
    ("text/html", "json", False),
])
def test_html_only_for_whoever_prefers_it(accept, fmt, html):
    assert eventview.wants_html(accept, fmt) is html


def metrics_registry():
    registry = CollectorRegistry()
    Gauge("errnomon_build_info", "b", ["version"], registry=registry).labels(version="t").set(1)
    return registry


def test_top_shows_the_latest_errors_under_the_tables():
    result = top.Result({"errnomon_build_info": {(): 1.0}}, None, 1.0, 1765115521.0,
                        [event(1), event(2, comm="redis-server", errno="EPIPE", op="send")])
    frame = top.Tracker("http://x/metrics", 1.0).update(result)
    lines = top.render(frame, 200, height=40)
    at = lines.index("Latest errors (errnomon errors -f for all)")
    assert "redis-server[4242]" in lines[at + 1] and "send EPIPE" in lines[at + 1]
    assert "curl[4242]" in lines[at + 2]
    short = top.render(frame, 200, height=12)
    assert len(short) <= 12


def test_top_and_errors_reach_an_endpoint_with_tls_client_certificates_and_basic_auth(certs, tmp_path):
    path = certs.path("cmd-web.yml")
    with open(path, "w") as f:
        f.write("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
                "basic_auth_users:\n  prom: %s\n" % hashed())
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    port = free_port()
    httpd = web.bind("127.0.0.1:%d" % port, "/metrics", metrics_registry(), None,
                     webconfig.Watcher(webconfig.load(path)))
    web.start(httpd)
    url = "https://localhost:%d/metrics" % port
    tls = ["--ca-file", certs.path("ca.crt"), "--cert-file", certs.path("client.crt"),
           "--key-file", certs.path("client.key")]
    try:
        out = io.StringIO()
        args = top.build_parser().parse_args(["--url", url] + tls + ["--username", "prom", "--password-file", str(pw)])
        http, problem = client.options(args)
        assert problem is None
        assert top.run_once(url, 0.1, 120, out, http) == 0
        assert out.getvalue().startswith("errnomon top")
        r = top.fetch(url, 5.0, client.options(top.build_parser().parse_args(tls))[0])
        assert r.error == "HTTP 401 Unauthorized (give --username and --password-file)"
        r = top.fetch(url, 5.0, client.Client())
        assert r.error.startswith("TLS: ") and "--ca-file" in r.error
        r = top.fetch(url, 5.0, client.Client(insecure=True))
        assert r.error.endswith("(does the server want a client certificate? give --cert-file and --key-file)")
    finally:
        httpd.shutdown()
        httpd.server_close()
