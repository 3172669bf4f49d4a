"""Daemon behaviour with real programs: reload, full maps, shutdown."""

import signal
import socket
import time

import pytest

from . import scenarios
from .conftest import Daemon, _require_environment

pytestmark = pytest.mark.bpf


@pytest.fixture
def own_daemon(tmp_path, request):
    _require_environment()
    daemons = []

    def start(config_text, name="own"):
        d = Daemon(tmp_path, config_text, name=name)
        daemons.append(d)
        return d
    yield start
    for d in daemons:
        d.stop()


def wait_log(d, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in d.output():
            return
        time.sleep(0.1)
    raise AssertionError("%r not logged:\n%s" % (text, d.output()))


def test_reload_keeps_counts_and_rejects_bad_config(own_daemon):
    d = own_daemon("kernel:\n  drain_interval: 200ms\n  syscall_tracepoints: true\n")
    r = scenarios.refused("hup1", socket.AF_INET)
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    d.wait_for("errnomon_socket_errors_total", [(dict(peer, comm=cli, errno="ECONNREFUSED", op="connect"), 1)],
               comm=cli)

    d.config.write_text("labels:\n  pid: maybe\n")
    d.signal(signal.SIGHUP)
    wait_log(d, "reload failed, keeping the running config")
    assert "labels.pid" in d.output()
    assert d.proc.poll() is None
    d.wait_for("errnomon_socket_errors_total", [(dict(peer, comm=cli, errno="ECONNREFUSED", op="connect"), 1)],
               comm=cli)

    # a valid config adding the pid label: old series keep their counts with pid="", new ones get the pid
    d.config.write_text("labels:\n  pid: true\nkernel:\n  drain_interval: 200ms\n  syscall_tracepoints: true\n")
    d.signal(signal.SIGHUP)
    wait_log(d, "config reloaded")
    r2 = scenarios.refused("hup2", socket.AF_INET)
    cli2, peer2 = r2["comms"]["cli"], dict(remote=r2["remote"], port=str(r2["port"]))
    d.wait_for("errnomon_socket_errors_total",
               [(dict(peer, comm=cli, errno="ECONNREFUSED", op="connect", pid=""), 1)], comm=cli)
    d.wait_for("errnomon_socket_errors_total",
               [(dict(peer2, comm=cli2, errno="ECONNREFUSED", op="connect", pid=str(r2["pids"]["cli"])), 1)],
               comm=cli2)
    assert d.stop() == 0


def test_full_map_is_counted_not_silent(own_daemon):
    """A tiny counts map and a long drain interval: every increment is either exported or counted as dropped."""
    d = own_daemon("kernel:\n  map_size: 256\n  drain_interval: 10s\n  syscall_tracepoints: true\n", name="tiny")
    n = 100
    results = [scenarios.refused("full%d" % i, socket.AF_INET) for i in range(n)]
    comms = {r["comms"]["cli"] for r in results}
    deadline = time.monotonic() + 30
    while True:
        counted = sum(v for (name, labels), v in d.scrape().items()
                      if name == "errnomon_socket_errors_total" and dict(labels)["comm"] in comms)
        dropped = d.samples("errnomon_dropped_total", reason="socket_errors_map_full")
        dropped = sum(dropped.values())
        if counted + dropped >= n or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # each refused connect makes keys in four metrics: 100 of them cannot fit in 256 entries
    assert dropped > 0
    # other processes' errors may land in the same map, so compare what ours could have used
    assert counted + dropped >= n
    assert counted <= n
    assert d.stop() == 0


def test_sigterm_detaches_programs(own_daemon):
    d = own_daemon("{}\n", name="term")
    assert d.stop() == 0
    out = d.output()
    assert "detaching BPF programs" in out and "stopped" in out


def _eagain_once(comm):
    """A child that does one non-blocking recv on an idle connection: EAGAIN."""
    import os
    pid = os.fork()
    if pid == 0:
        try:
            scenarios._set_comm(comm)
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            c = socket.create_connection(listener.getsockname())
            c.setblocking(False)
            try:
                c.recv(1)
            except BlockingIOError:
                os._exit(0)
            os._exit(1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert status == 0


def test_eagain_filtered_in_kernel_unless_configured(own_daemon):
    d = own_daemon("kernel:\n  drain_interval: 200ms\n", name="eagain")
    _eagain_once("eag_off")
    _eagain_once("eag_probe")  # a second process so the first's drain window has surely passed
    d.wait_for("errnomon_socket_errors_total", [], comm="eag_off")

    d.config.write_text("kernel:\n  drain_interval: 200ms\n  count: [EAGAIN]\n")
    d.signal(signal.SIGHUP)
    wait_log(d, "config reloaded")
    _eagain_once("eag_on")
    deadline = time.monotonic() + 5
    while not d.samples("errnomon_socket_errors_total", comm="eag_on") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # two drain intervals: nothing more may arrive
    [(labels, value)] = d.samples("errnomon_socket_errors_total", comm="eag_on").items()
    labels = dict(labels)
    assert (labels["errno"], labels["op"], labels["remote"], value) == ("EAGAIN", "recv", "127.0.0.1", 1.0)
    assert labels["port"].isdigit()  # the listener's ephemeral port


def test_syscall_tracepoints_off(own_daemon):
    """Without the syscalls: tracepoints a refused connect still shows, through the kernel-side events."""
    d = own_daemon("kernel:\n  drain_interval: 200ms\n", name="nosys")  # the default
    probes = d.samples("errnomon_probe_attached")
    assert len(probes) == 9 and set(probes.values()) == {1.0}
    assert not any("syscalls:" in dict(k)["probe"] for k in probes)
    r = scenarios.refused("nosys", socket.AF_INET)
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    d.wait_for("errnomon_connect_failures_total", [(dict(peer, comm=cli, errno="ECONNREFUSED"), 1)], comm=cli)
    d.wait_for("errnomon_socket_error_reports_total", [], comm=cli)
    d.wait_for("errnomon_tcp_resets_received_total", [(dict(peer, comm=cli, state="SYN_SENT"), 1)], comm=cli)
    d.wait_for("errnomon_socket_errors_total", [], comm=cli)
