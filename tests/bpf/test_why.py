"""Error events (GET /errors) against a live errnomon: real scenarios, each event's facts checked against the
generating program's own clocks, byte counts and errnos, beside the exact counts.

Actors are forked children that name themselves wy_* (prctl) before making a socket and report what each
call returned and when (CLOCK_MONOTONIC, the clock of the kernel's timestamps) over a pipe. Loopback only,
ports 47100-47199.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .conftest import TEST_CONFIG, Daemon, _require_environment, kernel_reset_reason

pytestmark = pytest.mark.bpf

DAEMON_PORT = 47150
KEEPALIVE_PORT, REFUSED_PORT, UNREAD_PORT, STORM_PORT = 47110, 47111, 47112, 47113
IDLE_TIMEOUT = 2.0   # the server closes a keep-alive connection idle this long
REUSE_AFTER = 3.0    # the client sends its next request this long after the first response
TOLERANCE = 0.3      # seconds: jiffies (4 ms here), scheduling, the drain

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15


def _set_comm(comm):
    assert _libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm.encode()), 0, 0, 0) == 0


class Child:
    """fn(report) in a forked child named comm; report(**facts) sends one JSON line to the parent."""

    def __init__(self, comm, fn, *args):
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.close(r)
            code = 0
            try:
                _set_comm(comm)
                out = os.fdopen(w, "w", buffering=1)
                fn(lambda **kw: out.write(json.dumps(kw) + "\n"), *args)
            except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
                os.write(w, (json.dumps({"exception": repr(e)}) + "\n").encode())
                code = 1
            os._exit(code)
        os.close(w)
        self.pipe = os.fdopen(r)
        self.comm = comm

    def next(self, timeout=15.0):
        """The child's next report (waits for it)."""
        import select
        ready, _, _ = select.select([self.pipe], [], [], timeout)
        assert ready, "%s reported nothing within %.0f s" % (self.comm, timeout)
        line = self.pipe.readline()
        assert line, "%s exited without reporting" % self.comm
        facts = json.loads(line)
        assert "exception" not in facts, "%s failed: %s" % (self.comm, facts["exception"])
        return facts

    def wait(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return status
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("%s did not finish within %.0f s" % (self.comm, timeout))


def _errno_of(call, *args):
    try:
        call(*args)
        return "OK"
    except OSError as e:
        return __import__("errno").errorcode[e.errno]


def _listener(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4)
    ls.settimeout(10)
    return ls


def _recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "peer closed after %d of %d bytes" % (len(data), n)
        data += chunk
    return data


@pytest.fixture(scope="module")
def why(tmp_path_factory):
    _require_environment()
    d = Daemon(tmp_path_factory.mktemp("why"), TEST_CONFIG, name="errnomon-why", port=DAEMON_PORT)
    d.errors_url = "http://127.0.0.1:%d/errors" % DAEMON_PORT
    yield d
    rc = d.stop()
    assert rc == 0, "errnomon did not exit cleanly on SIGTERM (%s):\n%s" % (rc, d.output())


def errors(daemon, query=""):
    with urllib.request.urlopen(daemon.errors_url + ("?" + query if query else ""), timeout=10) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.loads(r.read())


def wait_events(daemon, comm, count, timeout=5.0):
    """The events of comm once there are `count` of them; then a second look, a second later, that no more come."""
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        got = errors(daemon, "comm=" + comm)["events"]
        if len(got) >= count:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    got = errors(daemon, "comm=" + comm)["events"]
    assert len(got) == count, "%s: %d events, %d expected:\n%s" % (comm, len(got), count,
                                                                  json.dumps(got, indent=1))
    return got


def by_kind(events):
    out = {}
    for e in events:
        out.setdefault(e["kind"], []).append(e)
    return out


def near(value, expected, tolerance=TOLERANCE):
    return value is not None and abs(value - expected) <= tolerance


# ---- (a) a keep-alive connection the server closed after its idle timeout, reused by the client ----

REQUEST1, RESPONSE1, REQUEST2 = b"GET /a HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", \
    b"GET /b HTTP/1.1\r\n\r\n"


def _keepalive_server(report):
    ls = _listener(KEEPALIVE_PORT)
    report(listening=True)
    conn, _ = ls.accept()
    _recv_exactly(conn, len(REQUEST1))
    conn.sendall(RESPONSE1)
    conn.settimeout(IDLE_TIMEOUT)  # the keep-alive idle timeout
    try:
        conn.recv(1)
        raise AssertionError("the client sent before the idle timeout")
    except socket.timeout:
        pass
    closed = time.monotonic()
    conn.close()  # FIN: the client's socket enters CLOSE_WAIT
    report(closed=closed)
    ls.close()


def _keepalive_client(report):
    s = socket.create_connection(("127.0.0.1", KEEPALIVE_PORT), timeout=10)
    s.sendall(REQUEST1)
    _recv_exactly(s, len(RESPONSE1))
    received = time.monotonic()
    time.sleep(REUSE_AFTER)
    reused = time.monotonic()
    first = _errno_of(s.send, REQUEST2, socket.MSG_NOSIGNAL)  # accepted here; the closed peer answers RST
    time.sleep(0.3)
    second = _errno_of(s.send, REQUEST2, socket.MSG_NOSIGNAL)
    report(received=received, reused=reused, first=first, second=second, local_port=s.getsockname()[1],
           sent=len(REQUEST1) + len(REQUEST2) * (first == "OK"), got=len(RESPONSE1))
    s.close()


def test_stale_keepalive_reset(why):
    srv = Child("wy_ka_srv", _keepalive_server)
    assert srv.next()["listening"]
    cli = Child("wy_ka_cli", _keepalive_client)
    closed = srv.next()["closed"]
    c = cli.next(timeout=20)
    assert (srv.wait(), cli.wait()) == (0, 0)
    assert (c["first"], c["second"]) == ("OK", "EPIPE")
    assert near(c["reused"] - closed, REUSE_AFTER - IDLE_TIMEOUT)
    peer = dict(remote="127.0.0.1", port=str(KEEPALIVE_PORT))
    why.wait_for("errnomon_socket_errors_total", [(dict(peer, comm="wy_ka_cli", errno="EPIPE", op="send"), 1)],
                 comm="wy_ka_cli")
    why.wait_for("errnomon_tcp_resets_received_total", [(dict(peer, comm="wy_ka_cli", state="CLOSE_WAIT"), 1)],
                 comm="wy_ka_cli")

    events = by_kind(wait_events(why, "wy_ka_cli", 2))
    assert sorted(events) == ["reset_received", "socket_error"]
    (reset,), (error,) = events["reset_received"], events["socket_error"]
    common = dict(comm="wy_ka_cli", family="ipv4", local="127.0.0.1", local_port=c["local_port"],
                  remote="127.0.0.1", remote_port=KEEPALIVE_PORT, port=KEEPALIVE_PORT, fin_received=True,
                  labels={}, bytes_sent=c["sent"], bytes_received=c["got"], retrans=0, reason="")
    for e in (reset, error):
        assert {k: e[k] for k in common} == common, e
        assert e["pid"] == cli.pid
        assert e["age_s"] is not None and e["age_s"] >= REUSE_AFTER
        assert e["srtt_ms"] is not None and e["srtt_ms"] < 100
    # the client heard nothing since the response: the reset came at once after its send, the error 0.3 s later
    assert near(reset["idle_recv_s"], c["reused"] - c["received"]), (reset, c)
    assert near(error["idle_recv_s"], c["reused"] + 0.3 - c["received"]), (error, c)
    # the reset answered the send after the silence; the peer's FIN had come (reused - closed) before it
    assert (reset["state"], reset["errno"], reset["op"], reset["tid"]) == ("CLOSE_WAIT", "EPIPE", "", 0)
    assert near(reset["idle_send_s"], 0.0, 0.1)
    assert near(reset["fin_before_s"], c["reused"] - closed), (reset, c["reused"] - closed)
    assert reset["explanation"] == "peer had closed %.1f s earlier: a stale keep-alive connection (the peer's " \
        "idle timeout is shorter than ours; reused after its FIN)" % reset["fin_before_s"]
    assert (error["op"], error["errno"], error["state"], error["tid"]) == ("send", "EPIPE", "CLOSE", cli.pid)
    assert near(error["idle_send_s"], 0.3, 0.15)
    assert near(error["fin_before_s"], c["reused"] + 0.3 - closed)
    assert error["explanation"].startswith("peer had closed %.1f s earlier: a stale keep-alive connection"
                                           % error["fin_before_s"])
    assert error["seq"] > reset["seq"] and error["time"] > reset["time"]
    assert abs(error["time"] - time.time()) < 30


# ---- (b) a refused connect ----

def _refused_client(report, host):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    report(result=_errno_of(s.connect, (host, REFUSED_PORT)), local_port=s.getsockname()[1])
    s.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def test_refused_connect(why, host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:  # nothing listens there: a bind would fail if something did
        probe.bind((host, REFUSED_PORT))
    comm = "wy_rf%d_cli" % family
    cli = Child(comm, _refused_client, host)
    c = cli.next()
    assert c["result"] == "ECONNREFUSED"
    assert cli.wait() == 0
    why.wait_for("errnomon_connect_failures_total",
                 [(dict(comm=comm, errno="ECONNREFUSED", remote=host, port=str(REFUSED_PORT)), 1)], comm=comm)
    events = by_kind(wait_events(why, comm, 2))
    assert sorted(events) == ["connect_failed", "reset_received"]
    (failed,), (reset,) = events["connect_failed"], events["reset_received"]
    peer = "[%s]" % host if ":" in host else host
    for e in (failed, reset):
        assert (e["pid"], e["errno"], e["state"], e["family"], e["local"], e["remote"], e["remote_port"],
                e["port"]) == (cli.pid, "ECONNREFUSED", "SYN_SENT", "ipv6" if ":" in host else "ipv4", host, host,
                               REFUSED_PORT, REFUSED_PORT)
        assert (e["age_s"], e["idle_send_s"], e["idle_recv_s"], e["fin_received"]) == (None, None, None, False)
        assert e["explanation"] == "connection refused: nothing listens on %s:%d" % (peer, REFUSED_PORT)
    assert reset["local_port"] == c["local_port"]
    assert (failed["op"], failed["bytes_sent"], failed["retrans"]) == ("connect", 0, 0)


# ---- a connect whose SYNs go unanswered: the retransmissions are the tcp_sock's own ----

NETNS, SYN_PORT, SYN_RETRIES = "wy-r1", 47120, 2


@pytest.fixture
def syn_drop():
    """A network namespace whose loopback drops SYNs to SYN_PORT (nft, counting them), deleted after the test."""
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", NETNS, "nft", "-f", "-"], check=True, text=True, input=(
            "table inet wy {\n chain input {\n  type filter hook input priority 0;\n  tcp dport %d counter drop\n }\n}\n"
            % SYN_PORT))
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=True)


def dropped_syns(netns):
    """Packets the nft rule dropped: the SYNs the attempt sent, the first and its retransmissions."""
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "ruleset"], check=True,
                         capture_output=True, text=True).stdout
    counters = [e["counter"]["packets"] for item in json.loads(out)["nftables"] if "rule" in item
                for e in item["rule"]["expr"] if "counter" in e]
    assert len(counters) == 1, out
    return counters[0]


def _syn_timeout_client(report, netns):
    fd = os.open("/run/netns/" + netns, os.O_RDONLY)
    assert _libc.setns(fd, 0x40000000) == 0  # CLONE_NEWNET
    os.close(fd)
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, SYN_RETRIES)
    t0 = time.monotonic()
    result = _errno_of(s.connect, ("127.0.0.1", SYN_PORT))
    report(result=result, seconds=time.monotonic() - t0)
    s.close()


def test_connect_timeout_after_retransmissions(why, syn_drop):
    cli = Child("wy_st_cli", _syn_timeout_client, syn_drop)
    c = cli.next(timeout=30)
    assert cli.wait() == 0
    assert c["result"] == "ETIMEDOUT" and c["seconds"] < 20, c
    retransmissions = dropped_syns(syn_drop) - 1  # what the wire saw (the kernel's timing decides how many)
    assert retransmissions >= SYN_RETRIES
    why.wait_for("errnomon_connect_failures_total",
                 [(dict(comm="wy_st_cli", errno="ETIMEDOUT", remote="127.0.0.1", port=str(SYN_PORT)), 1)],
                 comm="wy_st_cli")
    (e,) = wait_events(why, "wy_st_cli", 1)
    assert (e["kind"], e["errno"], e["op"], e["state"], e["retrans"], e["remote_port"], e["pid"]) == \
        ("connect_failed", "ETIMEDOUT", "connect", "SYN_SENT", retransmissions, SYN_PORT, cli.pid)
    assert e["explanation"].startswith("connect timed out after %d retransmissions: no answer from 127.0.0.1:%d"
                                       % (retransmissions, SYN_PORT))


# ---- (c) the peer is killed holding unread data ----

UNREAD = 100


def _unread_server(report):
    ls = _listener(UNREAD_PORT)
    report(listening=True)
    conn, _ = ls.accept()
    report(accepted=True)
    time.sleep(30)  # never reads: killed by the test
    conn.close()


def _send_then_recv(report, port, n, wait):
    """Sends n bytes, waits while the server goes away without reading them, then recv()s."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"u" * n)
    report(sent=n, local_port=s.getsockname()[1])
    time.sleep(wait)
    report(recv=_errno_of(s.recv, 10))
    s.close()


def test_peer_killed_with_unread_data(why):
    srv = Child("wy_ud_srv", _unread_server)
    assert srv.next()["listening"]
    cli = Child("wy_ud_cli", _send_then_recv, UNREAD_PORT, UNREAD, 0.5)  # the test kills the server meanwhile
    assert srv.next()["accepted"]
    c = cli.next()
    time.sleep(0.1)  # the bytes are in the server's receive queue
    os.kill(srv.pid, signal.SIGKILL)
    assert os.WTERMSIG(srv.wait()) == signal.SIGKILL
    assert cli.next()["recv"] == "ECONNRESET"
    assert cli.wait() == 0
    peer = dict(remote="127.0.0.1", port=str(UNREAD_PORT))
    why.wait_for("errnomon_tcp_resets_received_total", [(dict(peer, comm="wy_ud_cli", state="ESTABLISHED"), 1)],
                 comm="wy_ud_cli")
    why.wait_for("errnomon_socket_errors_total", [(dict(peer, comm="wy_ud_cli", errno="ECONNRESET", op="recv"), 1)],
                 comm="wy_ud_cli")
    events = by_kind(wait_events(why, "wy_ud_cli", 2))
    (reset,), (error,) = events["reset_received"], events["socket_error"]
    assert (reset["state"], reset["errno"], reset["fin_received"], reset["bytes_sent"], reset["bytes_received"],
            reset["local_port"]) == ("ESTABLISHED", "ECONNRESET", False, UNREAD, 0, c["local_port"])
    assert (error["op"], error["errno"], error["state"]) == ("recv", "ECONNRESET", "CLOSE")
    # the killed server's kernel sent the reset, on the socket it owned
    (sent,) = wait_events(why, "wy_ud_srv", 1)
    reason = kernel_reset_reason("TCP_ABORT_ON_CLOSE")
    reason = "" if reason == "unknown" else reason
    assert (sent["kind"], sent["reason"], sent["remote"], sent["port"], sent["remote_port"]) == \
        ("reset_sent", reason, "127.0.0.1", UNREAD_PORT, c["local_port"])
    assert sent["bytes_received"] == UNREAD
    # both ends are on this host: the client's events name the server, which the test killed
    says = "reset by wy_ud_srv[%d] on this host" % srv.pid
    assert reset["explanation"] == error["explanation"] == \
        says + (" (TCP_ABORT_ON_CLOSE: it closed the connection with data unread)" if reason else "")


# ---- (c2) both ends on this host: the client's events name the server that reset it ----

PEER_PORT = 47310       # pj_* comms and ports 47300-47399 are this test's
PEER_SENT, PEER_READ = 100, 10


def _partial_reader(report):
    ls = _listener(PEER_PORT)
    report(listening=True)
    conn, _ = ls.accept()
    got = _recv_exactly(conn, PEER_READ)  # reads part of the request ...
    deadline = time.monotonic() + 5
    while len(conn.recv(PEER_SENT, socket.MSG_PEEK)) < PEER_SENT - PEER_READ and time.monotonic() < deadline:
        time.sleep(0.01)
    unread = len(conn.recv(PEER_SENT, socket.MSG_PEEK))
    conn.close()  # ... and closes with the rest unread: an RST (TCP_ABORT_ON_CLOSE), not a FIN
    report(read=len(got), unread=unread)
    ls.close()


def test_peer_on_this_host_is_named(why):
    srv = Child("pj_rs_srv", _partial_reader)
    assert srv.next()["listening"]
    cli = Child("pj_rs_cli", _send_then_recv, PEER_PORT, PEER_SENT, 1.0)  # the server closes meanwhile
    c = cli.next()
    r = srv.next()
    assert (r["read"], r["unread"]) == (PEER_READ, PEER_SENT - PEER_READ)
    assert cli.next()["recv"] == "ECONNRESET"
    assert (srv.wait(), cli.wait()) == (0, 0)
    reason = kernel_reset_reason("TCP_ABORT_ON_CLOSE")
    reason = "" if reason == "unknown" else reason
    (sent,) = wait_events(why, "pj_rs_srv", 1)
    assert (sent["kind"], sent["pid"], sent["reason"], sent["remote_port"], sent["local_port"]) == \
        ("reset_sent", srv.pid, reason, c["local_port"], PEER_PORT)
    events = by_kind(wait_events(why, "pj_rs_cli", 2))
    (reset,), (error,) = events["reset_received"], events["socket_error"]
    assert (reset["pid"], reset["local_port"], reset["state"]) == (cli.pid, c["local_port"], "ESTABLISHED")
    assert (error["pid"], error["op"], error["errno"]) == (cli.pid, "recv", "ECONNRESET")
    peer = {"pid": srv.pid, "comm": "pj_rs_srv", "labels": {}, "reason": reason}
    assert reset["peer"] == error["peer"] == peer, (reset, error)
    says = "reset by pj_rs_srv[%d] on this host" % srv.pid
    if reason:
        says += " (TCP_ABORT_ON_CLOSE: it closed the connection with data unread)"
    assert reset["explanation"] == error["explanation"] == says
    # the server's own event has no peer: its other end did not reset it
    assert sent["peer"] is None


def test_peer_beyond_this_host_is_null(why):
    """A stateful firewall in a router namespace forgets the idle flow and answers with its own RST (nft's
    reject, no socket's reset): the client's reset and error have no peer, and the server sent no reset
    (ground truth: the router rule's packet counter and each program's own errno)."""
    from . import net_scenarios
    r = net_scenarios.conntrack_forgets("pjct")
    assert r["errnos"]["cli"] == ["ECONNRESET"] and r["errnos"]["srv"] == [] and r["rejected"] == 1
    cli, srv = r["comms"]["cli"], r["comms"]["srv"]
    events = by_kind(wait_events(why, cli, 2))
    (reset,), (error,) = events["reset_received"], events["socket_error"]
    assert (reset["pid"], reset["remote"], reset["local_port"]) == \
        (r["pids"]["cli"], net_scenarios.SERVER, r["info"]["cli"]["local_port"])
    assert (error["op"], error["errno"]) == ("recv", "ECONNRESET")
    assert reset["peer"] is None and error["peer"] is None
    assert error["explanation"].startswith("reset after ") and "an idle timeout near" in error["explanation"]
    # the server's FIN at its close meets the same rule: its reset, too, came from the router
    (srv_reset,) = wait_events(why, srv, 1)
    assert (srv_reset["kind"], srv_reset["pid"], srv_reset["peer"]) == ("reset_received", r["pids"]["srv"], None)


# ---- (d) the rate limit: every error counted, every event kept or counted as dropped ----

STORM = 400
RATE = 50


def _storm_client(report):
    ls = _listener(STORM_PORT)
    s = socket.create_connection(("127.0.0.1", STORM_PORT), timeout=10)
    conn, _ = ls.accept()
    s.shutdown(socket.SHUT_WR)  # every send from here on fails with EPIPE, no reset, no signal
    results = [_errno_of(s.send, b"x", socket.MSG_NOSIGNAL) for _ in range(STORM)]
    report(epipe=results.count("EPIPE"), other=len(results) - results.count("EPIPE"))
    s.close()
    conn.close()
    ls.close()


def dropped(daemon):
    return {dict(labels)["reason"]: v for (name, labels), v in daemon.scrape().items()
            if name == "errnomon_events_dropped_total"}


def test_rate_limit(why):
    why.config.write_text(TEST_CONFIG + "events:\n  rate: %d\n" % RATE)
    why.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reloaded" not in why.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "config reloaded" in why.output()
    before = dropped(why)
    cli = Child("wy_rl_cli", _storm_client)
    r = cli.next()
    assert cli.wait() == 0
    assert (r["epipe"], r["other"]) == (STORM, 0)
    why.wait_for("errnomon_socket_errors_total",
                 [(dict(comm="wy_rl_cli", errno="EPIPE", op="send", remote="127.0.0.1", port=str(STORM_PORT)),
                   STORM)], comm="wy_rl_cli")
    time.sleep(1.0)
    kept = [e for e in errors(why, "comm=wy_rl_cli&limit=%d" % STORM)["events"]]
    after = dropped(why)
    assert {e["errno"] for e in kept} == {"EPIPE"}
    assert after["ring_full"] == before["ring_full"]
    assert len(kept) + after["rate_limit"] - before["rate_limit"] == STORM
    # a burst of RATE, then RATE a second for as long as the storm lasted (well under a second)
    assert RATE <= len(kept) <= 2 * RATE, len(kept)


# ---- (e) /errors filters on the real server ----

def test_filters(why):
    everything = errors(why, "limit=10000")
    assert everything["kept"] == len(errors(why, "limit=10000")["events"]) or everything["kept"] >= 7
    ours = errors(why, "comm=wy_ka_cli")["events"]
    assert [e["kind"] for e in ours] == ["reset_received", "socket_error"]
    assert errors(why, "comm=wy_ka_cli&errno=EPIPE&port=%d" % KEEPALIVE_PORT)["events"] == ours
    assert errors(why, "comm=wy_ka_cli&errno=32")["events"] == ours
    assert errors(why, "comm=wy_ka_cli&errno=ECONNRESET")["events"] == []
    assert errors(why, "comm=wy_ka_cli&remote=127.0.0.0/8")["events"] == ours
    assert errors(why, "comm=wy_ka_cli&remote=10.0.0.0/8")["events"] == []
    assert errors(why, "comm=wy_ka_cli&remote=::1")["events"] == []
    assert errors(why, "comm=wy_ka_cli&after=%d" % ours[0]["seq"])["events"] == ours[1:]
    assert errors(why, "comm=wy_ka_cli&limit=1")["events"] == ours[1:]  # the newest
    assert errors(why, "comm=wy_ka_cli&since=1h")["events"] == ours
    assert errors(why, "comm=wy_ka_cli&since=%d" % (time.time() + 60))["events"] == []
    assert errors(why, "comm=wy_ud_cli&port=%d" % UNREAD_PORT)["events"][0]["kind"] == "reset_received"
    assert set(everything["dropped"]) == {"rate_limit", "ring_full"}
    for query, parameter in (("port=http", "port"), ("remote=10.0.0.300", "remote"), ("errno=EBOGUS", "errno"),
                             ("since=yesterday", "since"), ("limit=0", "limit"), ("after=-1", "after"),
                             ("colour=red", "colour")):
        with pytest.raises(urllib.error.HTTPError) as e:
            errors(why, query)
        assert e.value.code == 400
        message = e.value.read().decode()
        assert message.count("\n") == 1 and parameter in message, message
