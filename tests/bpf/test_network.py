"""Errors that need a network: unreachable hosts and networks, a path that breaks, a peer that rebooted,
a listen queue that overflows. Real namespaces, router and ICMP (tests/bpf/net_scenarios.py); the
applications' own outcomes and the namespace's own counters are the expected values."""

import json
import re
import urllib.parse
import urllib.request

import pytest

from . import net_scenarios
from .net_scenarios import CLIENT, NO_ROUTE, SERVER, SERVICE_PORT
from .conftest import kernel_reset_reason, ttls_seen
from .test_errors import expect
from .test_why import by_kind, wait_events

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("kind, errno, remote", [("host", "EHOSTUNREACH", SERVER), ("net", "ENETUNREACH", NO_ROUTE)])
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_unreachable_connect(daemon, kind, errno, remote, blocking):
    """ICMP unreachable from a router answers the SYN: the connect fails, blocking or not."""
    n = 2
    r = net_scenarios.unreachable("u%s%d" % (kind[0], blocking), kind, blocking, n)
    op = "connect" if blocking else "so_error"
    assert r["calls"]["cli"] == [[op, errno]] * n
    cli, peer = r["comms"]["cli"], dict(remote=remote, port=str(SERVICE_PORT))
    expect(daemon, cli, "errnomon_connect_failures_total", (dict(peer, errno=errno), n))
    # the kernel's error report is the failed attempt's: not counted again as an established connection's
    expect(daemon, cli, "errnomon_socket_error_reports_total")
    # a blocking connect() returns the error itself (op=connect needs kernel.syscall_tracepoints, on here);
    # a non-blocking one returned EINPROGRESS, which is not an error
    expect(daemon, cli, "errnomon_socket_errors_total",
           *([(dict(peer, errno=errno, op="connect"), n)] if blocking else []))


def test_no_route_on_the_client(daemon):
    """No route at all: connect() fails before any packet or socket state exists, so only the system call
    sees it (op=connect, with kernel.syscall_tracepoints); nothing is a failed connection attempt."""
    r = net_scenarios.unreachable("unl", "local", True, 2)
    assert r["calls"]["cli"] == [["connect", "ENETUNREACH"]] * 2
    cli, peer = r["comms"]["cli"], dict(remote=NO_ROUTE, port=str(SERVICE_PORT))
    expect(daemon, cli, "errnomon_socket_errors_total", (dict(peer, errno="ENETUNREACH", op="connect"), 2))
    expect(daemon, cli, "errnomon_connect_failures_total")


def test_path_breaks_on_an_established_connection(daemon):
    """ICMP host-unreachable on an established connection is a soft error: TCP retransmits until
    TCP_USER_TIMEOUT, then the application's recv fails with EHOSTUNREACH instead of ETIMEDOUT."""
    r = net_scenarios.path_breaks("upb")
    assert r["errnos"]["cli"] == ["EHOSTUNREACH"]
    cli, peer = r["comms"]["cli"], dict(remote=SERVER, port=str(SERVICE_PORT))
    expect(daemon, cli, "errnomon_socket_errors_total", (dict(peer, errno="EHOSTUNREACH", op="recv"), 1))
    expect(daemon, cli, "errnomon_socket_error_reports_total", (dict(peer, errno="EHOSTUNREACH"), 1))
    expect(daemon, cli, "errnomon_connect_failures_total")
    expect(daemon, cli, "errnomon_tcp_resets_received_total")


def test_peer_reboot(daemon):
    """The server host forgot the connection: our next segment draws an RST for no socket, and the client's
    events say that the server host's kernel sent it."""
    r = net_scenarios.peer_reboot("prb")
    assert r["errnos"]["cli"] == ["ECONNRESET"]
    cli, srv = r["comms"]["cli"], r["comms"]["srv"]
    peer = dict(remote=SERVER, port=str(SERVICE_PORT))
    expect(daemon, cli, "errnomon_socket_errors_total", (dict(peer, errno="ECONNRESET", op="recv"), 1))
    expect(daemon, cli, "errnomon_socket_error_reports_total", (dict(peer, errno="ECONNRESET"), 1))
    expect(daemon, cli, "errnomon_tcp_resets_received_total", (dict(peer, state="ESTABLISHED"), 1))
    # the server host: its aborting close (the RST it tried to send, dropped on the way out) ...
    expect(daemon, srv, "errnomon_tcp_resets_sent_total",
           (dict(remote=CLIENT, port=str(SERVICE_PORT), reason="TCP_STATE"), 1))
    # ... and the RST for the connection it no longer knows: no socket, the service port is its own
    daemon.wait_for("errnomon_tcp_resets_sent_total",
                    [(dict(comm="", remote=CLIENT, port=str(SERVICE_PORT), reason="NO_SOCKET"), 1)],
                    comm="", remote=CLIENT)
    # both ends are on this host: the client's reset and error name the server host's kernel, which had no
    # socket for the segment, and not the server's own earlier reset, which its firewall dropped
    daemon.errors_url = "http://127.0.0.1:%d/errors" % daemon.port
    (sent,) = wait_events(daemon, srv, 1)
    reason = kernel_reset_reason("TCP_STATE")
    assert (sent["kind"], sent["reason"], sent["pid"], sent["remote_port"]) == \
        ("reset_sent", "" if reason == "unknown" else reason, r["pids"]["srv"], r["info"]["cli"]["local_port"])
    events = by_kind(wait_events(daemon, cli, 2))
    (reset,), (error,) = events["reset_received"], events["socket_error"]
    assert (reset["pid"], reset["local_port"], error["errno"]) == \
        (r["pids"]["cli"], r["info"]["cli"]["local_port"], "ECONNRESET")
    assert reset["peer"] == error["peer"] == {"pid": 0, "comm": "", "labels": {}, "reason": "NO_SOCKET"}
    assert reset["explanation"] == error["explanation"] == "reset by this host's kernel: no socket for it"


def test_a_firewall_that_forgets_an_idle_connection_resets_it_from_the_middle(daemon):
    """The router's conntrack forgets the idle flow; its nftables rule answers the client's next segment
    with an RST. The client gets ECONNRESET; the server sent no RST (ground truth: the router's rule counter
    and each program's own errno)."""
    r = net_scenarios.conntrack_forgets("uct")
    assert r["errnos"]["cli"] == ["ECONNRESET"] and r["errnos"]["srv"] == []
    assert r["rejected"] == 1
    cli, srv = r["comms"]["cli"], r["comms"]["srv"]
    peer = dict(remote=SERVER, port=str(SERVICE_PORT))
    expect(daemon, cli, "errnomon_socket_errors_total", (dict(peer, errno="ECONNRESET", op="recv"), 1))
    expect(daemon, cli, "errnomon_tcp_resets_received_total", (dict(peer, state="ESTABLISHED"), 1))
    expect(daemon, srv, "errnomon_tcp_resets_sent_total")
    # the idle time before that reset: the client's own sleep after the server's last answer
    idle = net_scenarios.CONNTRACK_TIMEOUT + 1.5
    expect_idle_reset(daemon, cli, SERVICE_PORT, idle, idle + 0.5)
    # and the event says why: the silence before the reset, and what usually causes it
    (reset,) = [e for e in errors(daemon, comm=cli) if e["kind"] == "reset_received"]
    assert (reset["remote"], reset["remote_port"], reset["state"]) == (SERVER, SERVICE_PORT, "ESTABLISHED")
    assert idle <= reset["idle_recv_s"] <= idle + 0.5 and reset["idle_send_s"] < 0.5
    # the router's reset leaves it with its own TTL; the server's segments arrive one router down from theirs
    peer_seen, rst_seen = ttls_seen()
    rst_ttl, peer_ttl = r["default_ttl"]["rtr"], r["default_ttl"]["srv"] - 1
    assert reset["rst_ttl"] == (rst_ttl if rst_seen else None), reset
    assert reset["peer_ttl"] == (peer_ttl if peer_seen else None), reset
    if peer_seen and rst_seen:
        assert re.fullmatch(r"RST TTL %d, peer's %d: sent by a middlebox, not by %s:%d \(a firewall, NAT or load "
                            r"balancer between the hosts that forgot the connection after 3\.\d s idle\)"
                            % (rst_ttl, peer_ttl, re.escape(SERVER), SERVICE_PORT), reset["explanation"]), reset
    else:
        assert re.fullmatch(r"reset after 3\.\d s idle: an idle timeout near 3\.\d s between the hosts \(a NAT, "
                            r"firewall or load balancer forgot the connection\)", reset["explanation"]), reset


def errors(daemon, **filters):
    """The daemon's GET /errors events for these filters."""
    url = "%s/errors?%s" % (daemon.url.rsplit("/", 1)[0], urllib.parse.urlencode(filters))
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())["events"]


IDLE_LE = ("1.0", "5.0", "15.0", "30.0", "60.0", "120.0", "350.0", "600.0", "900.0", "3600.0", "+Inf")


def expect_idle_reset(daemon, comm, port, low, high):
    """errnomon_tcp_reset_idle_seconds of comm and port: one reset, in the bucket of [low, high] seconds."""
    labels = dict(comm=comm, port=str(port))
    bucket = next(le for le in IDLE_LE if le == "+Inf" or float(le) >= high)
    assert bucket == next(le for le in IDLE_LE if le == "+Inf" or float(le) >= low), "the bounds straddle a bucket"
    daemon.wait_for("errnomon_tcp_reset_idle_seconds_bucket",
                    [(dict(labels, le=le), 1 if IDLE_LE.index(le) >= IDLE_LE.index(bucket) else 0) for le in IDLE_LE],
                    comm=comm)
    assert daemon.samples("errnomon_tcp_reset_idle_seconds_count", comm=comm) == {
        tuple(sorted(labels.items())): 1}
    (total,) = daemon.samples("errnomon_tcp_reset_idle_seconds_sum", comm=comm).values()
    assert low <= total <= high, total


def test_listen_queue_overflow(daemon):
    """A listener with backlog 1 that never accepts: every SYN beyond its queue is dropped silently.
    errnomon's count per listener equals the namespace's own ListenDrops (and ListenOverflows)."""
    seen = {}

    def check(kernel_drops, srv_comm):
        seen["kernel"] = kernel_drops
        # polled every 5 s: wait while the listener still exists
        daemon.wait_for("errnomon_listen_drops_total", [(dict(comm=srv_comm, port=str(SERVICE_PORT)), kernel_drops)],
                        timeout=15.0, comm=srv_comm)

    r = net_scenarios.listen_overflow("ulo", n=6, hold=1.5, while_listening=check)
    assert r["listen_drops"] == r["listen_overflows"] == seen["kernel"]
    assert seen["kernel"] >= 4  # six connects, a queue of two: at least four SYNs dropped
    expect(daemon, r["comms"]["cli"], "errnomon_listen_drops_total")
