"""The hook ladder's lower rungs: a second daemon allowed only kprobes (kernel.function_hooks: [kprobe]) must
count the same errors exactly. Where the kernel has the tracepoints (6.10+) this daemon uses them too; on
older kernels (the kernel matrix) its send/recv errors come from kretprobes, its error reports and socketless
resets from kprobes, and the main test daemon's from fexit/fentry."""

import os
import signal
import socket
import time

import pytest

from . import scenarios
from .conftest import (TEST_CONFIG, Daemon, _require_environment, function_exists, kernel_reset_reason,
                       kprobes_exist, tracepoint_exists)
from .test_errors import pipe_then_socket_epipe

pytestmark = pytest.mark.bpf


def kprobe_events():
    """The kernel's dynamic kprobe events (tracefs kprobe_events; none where the kernel has no kprobes)."""
    for tracefs in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            with open(os.path.join(tracefs, "kprobe_events")) as f:
                return set(f.read().splitlines())
        except OSError:
            continue
    return set()


@pytest.fixture(scope="module")
def kprobe_daemon(tmp_path_factory):
    _require_environment()
    before = kprobe_events()
    d = Daemon(tmp_path_factory.mktemp("errnomon-kprobe"), TEST_CONFIG + "  function_hooks: [kprobe]\n",
               name="errnomon-kprobe")
    yield d
    rc = d.stop()
    assert rc == 0, "errnomon did not exit cleanly on SIGTERM (%s):\n%s" % (rc, d.output())
    # kretprobes with a maxactive are tracefs events, which outlive their fds: errnomon removes its own
    assert kprobe_events() - before == set(), d.output()


def expected_hooks():
    """{signal: ({probes}, value)} each ladder signal must show with only kprobes allowed, from what the kernel
    itself shows (tracefs, /proc/kallsyms)."""
    def rung(tracepoint, functions, kind, has_tracepoint=None):
        if tracepoint_exists(tracepoint) if has_tracepoint is None else has_tracepoint:
            return {tracepoint.replace("/", ":")}, 1.0
        if not kprobes_exist():
            return {tracepoint.replace("/", ":")}, 0.0  # nothing this kernel can use: reported with 0
        return {"%s:%s" % (kind, f) for f in functions if function_exists(f)}, 1.0

    return {
        "send_errors": rung("sock/sock_send_length", ("inet_sendmsg", "inet6_sendmsg", "inet_sendpage",
                                                      "unix_stream_sendmsg", "unix_seqpacket_sendmsg"), "kretprobe"),
        "recv_errors": rung("sock/sock_recv_length", ("inet_recvmsg", "inet6_recvmsg", "unix_stream_recvmsg",
                                                      "unix_seqpacket_recvmsg"), "kretprobe"),
        "error_reports": rung("sock/inet_sk_error_report", ("sock_def_error_report",), "kprobe"),
        # tcp_send_reset shows socketless resets from 6.10, with the reason field
        "resets_sent_without_socket": rung("tcp/tcp_send_reset", ("tcp_v4_send_reset", "tcp_v6_send_reset"),
                                           "kprobe", kernel_reset_reason("x") == "x"),
    }


def test_each_signal_uses_the_rung_the_kernel_offers(kprobe_daemon):
    by_signal = {}
    for labels, value in kprobe_daemon.samples("errnomon_probe_attached").items():
        d = dict(labels)
        probes, values = by_signal.setdefault(d["signal"], (set(), set()))
        probes.add(d["probe"])
        values.add(value)
    expected = expected_hooks()
    assert {s: (p, v) for s, (p, v) in by_signal.items() if s in expected} == {
        s: (p, {v}) for s, (p, v) in expected.items()}
    assert all(v == {1.0} for s, (_, v) in by_signal.items() if s not in expected)
    assert not any(p.startswith(("fexit:", "fentry:")) for probes, _ in by_signal.values() for p in probes)


def expect(daemon, comm, metric, *series):
    daemon.wait_for(metric, [(dict(labels, comm=comm), value) for labels, value in series], comm=comm)


def test_reset_on_send_and_sigpipe(kprobe_daemon):
    r = scenarios.sigpipe("lk", "killed")
    assert r["errnos"]["cli"] == ["ECONNRESET"] and r["exit_signal"] == signal.SIGPIPE
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    expect(kprobe_daemon, cli, "errnomon_socket_errors_total",
           (dict(peer, errno="ECONNRESET", op="send"), 1), (dict(peer, errno="EPIPE", op="send"), 1))
    expect(kprobe_daemon, cli, "errnomon_sigpipe_total", (dict(action="killed"), 1))


def test_reset_on_recv_and_error_report(kprobe_daemon):
    r = scenarios.reset_on_recv("lr", socket.AF_INET6)
    assert r["errnos"]["cli"] == ["ECONNRESET", "EOF"]
    cli, srv, peer = r["comms"]["cli"], r["comms"]["srv"], dict(remote=r["remote"], port=str(r["port"]))
    expect(kprobe_daemon, cli, "errnomon_socket_errors_total", (dict(peer, errno="ECONNRESET", op="recv"), 1))
    expect(kprobe_daemon, cli, "errnomon_socket_error_reports_total", (dict(peer, errno="ECONNRESET"), 1))
    expect(kprobe_daemon, srv, "errnomon_tcp_resets_sent_total",
           (dict(peer, reason=kernel_reset_reason("TCP_STATE")), 1))


def test_reset_for_no_socket(kprobe_daemon):
    r = scenarios.refused("ln", socket.AF_INET)
    assert r["errnos"]["cli"] == ["ECONNREFUSED"]
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    expect(kprobe_daemon, cli, "errnomon_connect_failures_total", (dict(peer, errno="ECONNREFUSED"), 1))
    kprobe_daemon.wait_for("errnomon_tcp_resets_sent_total", [(dict(peer, comm="", reason="NO_SOCKET"), 1)],
                           comm="", port=str(r["port"]))


# ---- the last rung: the system calls' own tracepoints (opt-in) ----

@pytest.fixture(scope="module")
def syscall_daemon(tmp_path_factory):
    """send/recv errors from the syscall tracepoints: the kernel's send/recv tracepoints are ignored (a test-only
    setting) and no function hooks are allowed, so that this rung runs on any kernel."""
    _require_environment()
    d = Daemon(tmp_path_factory.mktemp("errnomon-syscalls"), TEST_CONFIG + "  function_hooks: []\n",
               name="errnomon-syscalls",
               env={"ERRNOMON_IGNORE_TRACEPOINTS": "sock:sock_send_length,sock:sock_recv_length"})
    yield d
    rc = d.stop()
    assert rc == 0, "errnomon did not exit cleanly on SIGTERM (%s):\n%s" % (rc, d.output())


def test_syscall_rung_attached(syscall_daemon):
    by_signal = {}
    for labels, value in syscall_daemon.samples("errnomon_probe_attached").items():
        d = dict(labels)
        by_signal.setdefault(d["signal"], set()).add((d["probe"], value))
    assert by_signal["send_errors"] == {("syscalls:sys_%s_%s" % (edge, call), 1.0) for edge in ("enter", "exit")
                                        for call in ("sendto", "sendmsg", "sendmmsg", "write", "writev", "sendfile64")}
    assert by_signal["recv_errors"] == {("syscalls:sys_%s_%s" % (edge, call), 1.0) for edge in ("enter", "exit")
                                        for call in ("recvfrom", "recvmsg", "recvmmsg", "read", "readv")}


@pytest.mark.parametrize("action", ["killed", "ignored"])
def test_syscall_rung_reset_on_send_and_sigpipe(syscall_daemon, action):
    r = scenarios.sigpipe("ls" + action[0], action)
    assert r["errnos"]["cli"] == (["ECONNRESET"] if action == "killed" else ["ECONNRESET", "EPIPE"])
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    expect(syscall_daemon, cli, "errnomon_socket_errors_total",
           (dict(peer, errno="ECONNRESET", op="send"), 1), (dict(peer, errno="EPIPE", op="send"), 1))
    expect(syscall_daemon, cli, "errnomon_sigpipe_total", (dict(action=action), 1))


def test_syscall_rung_reset_on_recv(syscall_daemon):
    r = scenarios.reset_on_recv("lsr", socket.AF_INET6)
    assert r["errnos"]["cli"] == ["ECONNRESET", "EOF"]
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    expect(syscall_daemon, cli, "errnomon_socket_errors_total", (dict(peer, errno="ECONNRESET", op="recv"), 1))


def test_syscall_rung_ignores_pipes(syscall_daemon):
    """write() on a pipe whose reader is gone fails with EPIPE: a pipe's, not a socket's. Three of them, then a
    socket's ECONNRESET and EPIPE: exactly those two are counted, and no SIGPIPE (MSG_NOSIGNAL)."""
    comm = scenarios.make_comm("lsp", "cli")
    pipe_then_socket_epipe(comm, pipe_writes=3)

    def by_errno():
        return {(dict(k)["errno"], dict(k)["op"]): v
                for k, v in syscall_daemon.samples("errnomon_socket_errors_total", comm=comm).items()}
    deadline = time.monotonic() + 5
    while by_errno() != {("ECONNRESET", "send"): 1.0, ("EPIPE", "send"): 1.0} and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.2)  # two drain intervals: a late increment would show now
    assert by_errno() == {("ECONNRESET", "send"): 1.0, ("EPIPE", "send"): 1.0}
    assert syscall_daemon.samples("errnomon_sigpipe_total", comm=comm) == {}
