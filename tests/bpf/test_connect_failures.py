"""Failed connection attempts (errnomon_connect_failures_total) and resets sent to aborting clients.

Ground truth: the client's own connect() errno (blocking) or getsockopt(SO_ERROR) after poll (non-blocking,
as event loops read it); the server's own recv errors. Every series carrying the test's comms is compared
exactly, labels included.
"""

import collections
import socket

import pytest

from . import core_scenarios
from .conftest import kernel_reset_reason
from .test_errors import expect

pytestmark = pytest.mark.bpf

FAMILIES = pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
BLOCKING = pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])


def outcomes(r, role="cli"):
    return [res for op, res in r["calls"][role]]


@FAMILIES
@BLOCKING
def test_refused(daemon, family, blocking):
    n = 3
    r = core_scenarios.refused("cr%d%s" % (family, "b" if blocking else "n"), family, n, blocking)
    if blocking:
        assert outcomes(r) == ["ECONNREFUSED"] * n
    else:  # connect says EINPROGRESS; the refusal arrives through SO_ERROR
        assert outcomes(r) == ["EINPROGRESS"] * n + ["ECONNREFUSED"] * n
        assert r["info"]["cli"]["unfinished"] == 0
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    expect(daemon, cli, "errnomon_connect_failures_total", (dict(peer, errno="ECONNREFUSED"), n))
    # never established: not an error report; the RST arrived in SYN_SENT
    expect(daemon, cli, "errnomon_socket_error_reports_total")
    expect(daemon, cli, "errnomon_tcp_resets_received_total", (dict(peer, state="SYN_SENT"), n))
    # the application's own view: only a blocking connect returns the error (syscall tracepoints are on here)
    expect(daemon, cli, "errnomon_socket_errors_total",
           *([(dict(peer, errno="ECONNREFUSED", op="connect"), n)] if blocking else []))


@BLOCKING
def test_timed_out(daemon, blocking):
    """SYNs dropped in a private netns, TCP_SYNCNT 1: the attempt times out after about 3 s."""
    n = 1 if blocking else 2
    r = core_scenarios.timed_out("ct%s" % ("b" if blocking else "n"), socket.AF_INET, n, blocking)
    if blocking:
        assert outcomes(r) == ["ETIMEDOUT"] * n
    else:
        assert outcomes(r) == ["EINPROGRESS"] * n + ["ETIMEDOUT"] * n
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    expect(daemon, cli, "errnomon_connect_failures_total", (dict(peer, errno="ETIMEDOUT"), n))
    expect(daemon, cli, "errnomon_socket_error_reports_total")
    expect(daemon, cli, "errnomon_tcp_resets_received_total")


@FAMILIES
def test_resets_sent_to_aborting_clients_make_one_series(daemon, family):
    """n clients on n ephemeral ports abort; the resets their kernel sends for the server's late segments
    are one series with the server's port, not one per client port; the server sees n ECONNRESET."""
    n = 5
    r = core_scenarios.aborting_clients("ab%d" % family, family, n)
    assert r["errnos"]["srv"] == ["ECONNRESET"] * n
    assert len(set(r["info"]["cli"]["local_ports"])) == n
    cli, srv, port = r["comms"]["cli"], r["comms"]["srv"], str(r["port"])
    peer = dict(remote=r["remote"], port=port)
    # the clients' aborts (linger 0) carry the owner; the kernel's answers for no socket carry none
    expect(daemon, cli, "errnomon_tcp_resets_sent_total",
           (dict(peer, reason=kernel_reset_reason("TCP_STATE")), n))
    daemon.wait_for("errnomon_tcp_resets_sent_total", [(dict(peer, comm="", reason="NO_SOCKET"), n)],
                    comm="", remote=r["remote"], port=port)
    for p in r["info"]["cli"]["local_ports"]:  # no series for a client's ephemeral port
        assert daemon.samples("errnomon_tcp_resets_sent_total", port=str(p)) == {}
    expect(daemon, srv, "errnomon_tcp_resets_received_total", (dict(peer, state="ESTABLISHED"), n))
    expect(daemon, srv, "errnomon_socket_error_reports_total", (dict(peer, errno="ECONNRESET"), n))
    expect(daemon, srv, "errnomon_socket_errors_total", (dict(peer, errno="ECONNRESET", op="recv"), n))
    expect(daemon, srv, "errnomon_connect_failures_total")


@FAMILIES
def test_listener_resets_carry_the_peer(daemon, family):
    """A server forgot n connections but still listens: the listener answers each client's keepalive probe
    with a reset, labelled with the listener's comm and the client's address (not the listener's 0.0.0.0)."""
    n = 3
    r = core_scenarios.listener_forgot("lf%d" % family, family, n)
    assert r["errnos"]["cli"] == ["ECONNRESET"] * n and r["info"]["cli"]["unfinished"] == 0
    cli, srv, peer = r["comms"]["cli"], r["comms"]["srv"], dict(remote=r["remote"], port=str(r["port"]))
    # the forgotten connections' own aborts (linger 0), and the listener's answers: an ACK to a listener (6.18's
    # name); one series of 2n where the kernel names no reasons (before 6.10)
    reasons = collections.Counter({kernel_reset_reason("TCP_STATE"): n})
    reasons[kernel_reset_reason("TCP_FLAGS")] += n
    expect(daemon, srv, "errnomon_tcp_resets_sent_total", *[(dict(peer, reason=k), v) for k, v in reasons.items()])
    expect(daemon, cli, "errnomon_tcp_resets_received_total", (dict(peer, state="ESTABLISHED"), n))
    expect(daemon, cli, "errnomon_socket_error_reports_total", (dict(peer, errno="ECONNRESET"), n))
    expect(daemon, cli, "errnomon_connect_failures_total")


@pytest.mark.parametrize("how", ["close", "shutdown", "unspec"])
def test_attempts_the_program_gives_up_are_no_failures(daemon, how):
    """A program that abandons its own attempt (inside a system call that holds the socket) closes it with no
    error recorded, or records ECONNRESET itself (a disconnect): no connect failure, no error report. The other
    side of the rule that counts attempts the kernel closed after their error was taken (test_connect_races.py)."""
    n = 3
    r = core_scenarios.abandoned_attempts("give" + how[0], how, n)
    outcomes = collections.Counter(res for op, res in r["calls"]["cli"])
    expected = {"close": {"EINPROGRESS": n}, "shutdown": {"EINPROGRESS": n, "OK": n, "ECONNRESET": n},
                "unspec": {"EINPROGRESS": n, "OK": n, "ECONNRESET": n}}[how]
    assert outcomes == expected, r["calls"]["cli"]
    cli = r["comms"]["cli"]
    expect(daemon, cli, "errnomon_connect_failures_total")
    expect(daemon, cli, "errnomon_socket_error_reports_total")
