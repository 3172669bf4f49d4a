"""Daemon behaviour with real programs: reload (bad files included), signals, full maps, many HTTP
connections, the unit label, shutdown."""

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.unit.test_config import HOSTILE

from . import scenarios
from .conftest import REPO, Daemon, _require_environment, free_port, ttls_seen

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


def in_child(action):
    """Run `action` in a forked child; it must return True (the expected socket error happened)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if action() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def _eagain_once(comm):
    """A child that does one non-blocking recv on an idle connection: EAGAIN."""
    def action():
        scenarios._set_comm(comm)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        c = socket.create_connection(listener.getsockname())
        c.setblocking(False)
        try:
            c.recv(1)
        except BlockingIOError:
            return True
        return False
    in_child(action)


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
    assert len({dict(k)["signal"] for k in probes}) == 9 + sum(ttls_seen()) and set(probes.values()) == {1.0}
    assert not any("syscalls:" in dict(k)["probe"] for k in probes)
    r = scenarios.refused("nosys", socket.AF_INET)
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    d.wait_for("errnomon_connect_failures_total", [(dict(peer, comm=cli, errno="ECONNREFUSED"), 1)], comm=cli)
    d.wait_for("errnomon_socket_error_reports_total", [], comm=cli)
    d.wait_for("errnomon_tcp_resets_received_total", [(dict(peer, comm=cli, state="SYN_SENT"), 1)], comm=cli)
    d.wait_for("errnomon_socket_errors_total", [], comm=cli)


def _voluntary_switches(pid):
    """How often the daemon's main thread has blocked: once per wait of its loop, at least."""
    with open("/proc/%d/task/%d/status" % (pid, pid)) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))


def test_idle_daemon_sleeps_until_the_programs_make_a_key(own_daemon):
    """With nothing counted the loop stops draining: its main thread stays blocked instead of waking every
    drain interval, until a program makes a key. The errors that wake it are counted exactly, each time."""
    d = own_daemon("kernel:\n  drain_interval: 100ms\n", name="sleepy")
    bursts = []
    for round_ in range(3):
        time.sleep(1.0)  # the first drain that finds the ring empty puts the loop to sleep
        before = _voluntary_switches(d.proc.pid)
        time.sleep(3.0)
        woke = _voluntary_switches(d.proc.pid) - before
        # draining every 100 ms would be 30; a listener poll (every 5 s) or another process's error costs a few
        assert woke < 10, "the idle main thread blocked %d times in 3 s:\n%s" % (woke, d.output()[-2000:])
        before, t0 = _voluntary_switches(d.proc.pid), time.monotonic()
        r = scenarios.refused("sleepy%d" % round_, socket.AF_INET)
        assert r["errnos"]["cli"] == ["ECONNREFUSED"]  # the program's own account
        time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))  # before any scrape: its connection's close is counted
        bursts.append(_voluntary_switches(d.proc.pid) - before)
        cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
        d.wait_for("errnomon_connect_failures_total", [(dict(peer, comm=cli, errno="ECONNREFUSED"), 1)], comm=cli)
        d.wait_for("errnomon_tcp_resets_received_total", [(dict(peer, comm=cli, state="SYN_SENT"), 1)], comm=cli)
    # the wake-up drains at once (the idle generation has been idle for seconds), one more drain an interval
    # later finds the ring empty: two waits. Another process's error or a listener poll only adds: the least of
    # three rounds.
    assert min(bursts) <= 2, "a burst woke the idle main thread %s times in three rounds" % bursts


# ---------------------------------------------------------------------------
# issue 7: bad reloads, signal bursts and start-up signals, many connections, the unit label

FAST = "kernel:\n  drain_interval: 200ms\n  syscall_tracepoints: true\n"


def refused_series(d, prefix):
    """One real refused connect; waits until errnomon shows exactly it. Returns (labels, comm)."""
    r = scenarios.refused(prefix, socket.AF_INET)
    assert r["errnos"]["cli"] == ["ECONNREFUSED"]  # the program's own account
    cli = r["comms"]["cli"]
    labels = dict(remote=r["remote"], port=str(r["port"]), comm=cli, errno="ECONNREFUSED", op="connect")
    d.wait_for("errnomon_socket_errors_total", [(labels, 1)], comm=cli)
    return labels, cli


def bad_reloads():
    """(name, how to put it at the config path, expected message after '<path>: ')."""
    cases = [("hostile%d" % i, text, expected[len("config.yaml: "):]) for i, (text, expected) in enumerate(HOSTILE)]
    cases += [
        ("fifo", os.mkfifo, "cannot read config file: it is a FIFO, not a regular file: point --config.file at "
                            "a YAML file"),
        ("dev_zero", lambda p: os.symlink("/dev/zero", p),
         "cannot read config file: it is a character device, not a regular file: point --config.file at a YAML "
         "file"),
        ("oversize", lambda p: open(p, "wb").write(b"#" * (3 << 20)),
         "cannot read config file: %d bytes is over the 1024 KiB limit: a config needs a few KiB; check "
         "--config.file" % (3 << 20)),
    ]
    return cases


def test_bad_reloads_keep_config_and_counts(own_daemon):
    d = own_daemon(FAST, name="badreload")
    first, cli = refused_series(d, "bad1")
    path = str(d.config)
    for n, (name, put, expected) in enumerate(bad_reloads()):
        os.unlink(path)
        if callable(put):
            put(path)
        else:
            with open(path, "w") as f:
                f.write(put)
        d.signal(signal.SIGHUP)
        line = "reload failed, keeping the running config and all counts: %s: %s" % (path, expected)
        deadline = time.monotonic() + 20
        while d.output().count("reload failed") < n + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.output().count("reload failed") == n + 1, (name, d.output()[-2000:])
        assert logged_line(d, line), (name, line, d.output()[-2000:])
        assert d.proc.poll() is None, name
        assert d.samples("errnomon_socket_errors_total", comm=cli) == {tuple(sorted(first.items())): 1.0}, name
    # counting went on with the first config (syscall tracepoints on, no pid label) and nothing was lost
    second, cli2 = refused_series(d, "bad2")
    d.wait_for("errnomon_socket_errors_total", [(first, 1)], comm=cli)
    assert "Traceback" not in d.output()
    os.unlink(path)
    assert d.stop() == 0


def logged_line(d, text):
    """The log line whose msg is exactly `text` (logfmt, quotes escaped)."""
    want = 'msg="%s"' % text.replace("\\", "\\\\").replace('"', '\\"')
    return any(line.endswith(want) for line in d.output().splitlines())


def test_sighup_burst_then_counting_goes_on_and_sigterm_stops(own_daemon):
    d = own_daemon(FAST, name="burst")
    first, cli = refused_series(d, "burst1")
    for _ in range(2000):
        os.kill(d.proc.pid, signal.SIGHUP)
    second, cli2 = refused_series(d, "burst2")  # counting continues
    d.wait_for("errnomon_socket_errors_total", [(first, 1)], comm=cli)
    reloads = d.output().count("config reloaded")
    assert 1 <= reloads < 2000  # coalesced: one read at a time, one more for everything that came during it
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    print("SIGTERM after 2000 SIGHUPs: stopped in %.2f s, %d reloads" % (time.monotonic() - t0, reloads))
    assert "SIGTERM received" in d.output() and "stopped" in d.output()


@contextlib.contextmanager
def spawned(tmp_path, name, config_text=FAST):
    """A daemon process, not waited for: for signals during start-up. Killed at the end if still there."""
    _require_environment()
    config = tmp_path / (name + ".yaml")
    config.write_text(config_text)
    log = open(tmp_path / (name + ".log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "--config.file=%s" % config,
                             "--web.listen-address=127.0.0.1:%d" % free_port(), "--log.level=debug"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def output():
        log.flush()
        log.seek(0)
        return log.read()

    def wait_for_text(text, timeout=30):
        deadline = time.monotonic() + timeout
        while text not in output():
            assert proc.poll() is None, output()
            assert time.monotonic() < deadline, "%r not logged:\n%s" % (text, output())
            time.sleep(0.01)
    try:
        yield proc, config, output, wait_for_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_start_up_is_a_clean_stop(tmp_path):
    with spawned(tmp_path, "earlyterm") as (proc, _, output, wait_for_text):
        wait_for_text("loading BPF programs")  # the compile takes a second or more
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, output()
        out = output()
    assert "SIGTERM received" in out and "detaching BPF programs" in out and "stopped" in out, out
    assert out.index("attached") < out.index("SIGTERM received")


def test_sighup_during_start_up_reloads_after_start(tmp_path):
    with spawned(tmp_path, "earlyhup") as (proc, config, output, wait_for_text):
        wait_for_text("loading BPF programs")
        config.write_text("labels:\n  pid: true\n" + FAST)
        proc.send_signal(signal.SIGHUP)
        wait_for_text("config reloaded")
        assert proc.poll() is None
        out = output()
        assert out.index("serving metrics") < out.index("config reloaded"), out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, output()


def test_metrics_answer_with_1000_idle_connections_and_200_scrapers(own_daemon):
    # systemd's default soft limit: the daemon must raise it itself to hold 1000 connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 1300, "the hard open-file limit (%d) is too low for this test: raise it" % hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        d = own_daemon(FAST, name="many")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    first, cli = refused_series(d, "many1")
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", d.port), timeout=10))
        t0 = time.monotonic()
        assert d.samples("errnomon_socket_errors_total", comm=cli) == {tuple(sorted(first.items())): 1.0}
        elapsed = time.monotonic() - t0
        print("scrape with 1000 idle connections open: %.3f s" % elapsed)
        assert elapsed < 10  # 1 s is the goal; generous: this machine is shared with other test runs
        assert d.proc.poll() is None
    finally:
        for s in idle:
            s.close()

    statuses = []

    def scrape():
        try:
            with urllib.request.urlopen(d.url, timeout=30) as r:
                body = r.read().decode()
                statuses.append(r.status if "errnomon_build_info" in body else body[:100])
        except OSError as e:
            statuses.append(repr(e))
    t0 = time.monotonic()
    threads = [threading.Thread(target=scrape) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    print("200 concurrent scrapes: %.2f s" % (time.monotonic() - t0))
    assert statuses == [200] * 200
    assert d.stop() == 0


def cgroup_child(procs_file, comm, port):
    """A child that moves itself into the cgroup of `procs_file`, names itself `comm` and connects to a
    port nobody listens on; its exit status says whether connect() failed with ECONNREFUSED."""
    def action():
        with open(procs_file, "w") as f:
            f.write(str(os.getpid()))
        scenarios._set_comm(comm)
        try:
            socket.socket().connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False
    return in_child(action)


def test_unit_label_in_a_real_cgroup_and_the_root_cgroup(own_daemon):
    from monitor.cgroups import cgroup2_mount
    root = cgroup2_mount()
    assert root, "no cgroup2 mount: errnomon's unit label needs cgroup v2"
    d = own_daemon("labels:\n  unit: true\n" + FAST, name="unit")
    name = "%serrnomon-test.scope" % os.environ.get("ERRNOMON_TEST_TAG", "")
    cg = os.path.join(root, name)
    os.mkdir(cg)
    try:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        in_cg, in_root = scenarios.make_comm("unit", "cg"), scenarios.make_comm("unit", "root")
        cgroup_child(os.path.join(cg, "cgroup.procs"), in_cg, port)
        cgroup_child(os.path.join(root, "cgroup.procs"), in_root, port)
        common = dict(remote="127.0.0.1", port=str(port), errno="ECONNREFUSED", op="connect")
        d.wait_for("errnomon_socket_errors_total", [(dict(common, comm=in_cg, unit=name), 1)], comm=in_cg)
        d.wait_for("errnomon_socket_errors_total", [(dict(common, comm=in_root, unit="/"), 1)], comm=in_root)
    finally:
        os.rmdir(cg)
    assert d.stop() == 0


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("RssAnon:")).split()[1])


def test_memory_flat_over_200000_distinct_peers(own_daemon):
    """Refused connects to 200,000 distinct loopback addresses (in conftest.CHURN_NET, which the other tests'
    daemon groups into one label) with a budget of 100 series:
    after a 60,000-peer warm-up, the daemon's anonymous memory stays flat.

    "Flat" is asserted as less than 4 MiB here, 1 MiB on traced Python memory in the unit test
    (test_aggregate.py): RssAnon also holds what malloc keeps from the largest drains, which depends on
    how far the loop fell behind on this shared machine (0.3-2 MiB measured), not on the number of peers.
    The grouper's old 65536-entry cache made it grow by about 10 MiB over the same churn.

    The connects are paced (5,000 a second, about 15,000 keys a second in three metrics) and the counts map
    holds 65536 keys, so no increment is dropped and the counts are exact. Unpaced, a daemon that falls
    behind drains up to a whole map at once: its memory then follows kernel.map_size, not the peers."""
    d = own_daemon("series:\n  budget: 100\nkernel:\n  map_size: 65536\n  drain_interval: 200ms\n"
                   "  syscall_tracepoints: true\n", name="churn")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    comm = scenarios.make_comm("churn", "cli")
    refused = 0

    def churn(first, count):
        def action():
            scenarios._set_comm(comm)
            start = time.monotonic()
            for n in range(first, first + count):
                if n % 500 == 0:  # 5,000 a second at most
                    time.sleep(max(0.0, start + (n - first) / 5000 - time.monotonic()))
                c = socket.socket()
                try:
                    c.connect(("127.%d.%d.%d" % (64 + (n // 254 >> 8), n // 254 & 255, n % 254 + 1), port))
                except ConnectionRefusedError:
                    pass
                else:
                    return False
                finally:
                    c.close()
            return True
        in_child(action)  # every connect refused: the program's own account
        return count

    def counted():
        """Refused connects errnomon counted for our comm: 100 peers fill the budget, the rest go to our
        comm's remote="other" row, made while the reserve is still free (so comm is never folded)."""
        return sum(d.samples("errnomon_socket_errors_total", comm=comm, errno="ECONNREFUSED").values())

    def settled():
        """RssAnon once the last events are drained and scraped: the least of a few reads."""
        time.sleep(1.0)
        d.scrape()
        reads = []
        for _ in range(4):
            reads.append(rss_anon_kib(d.proc.pid))
            time.sleep(0.25)
        return min(reads)

    refused += churn(1, 60_000)
    base = settled()
    samples = []
    for first in range(60_001, 200_001, 35_000):
        refused += churn(first, 35_000)
        samples.append(settled() - base)
    print("RssAnon growth after the warm-up, KiB, every 35,000 peers: %s" % samples)
    assert max(samples) < 4096, samples
    series = d.samples("errnomon_series", metric="errnomon_socket_errors_total")
    # the budget, its reserve of 10, then one fully folded row per errno and op seen on the host: bounded
    assert list(series.values())[0] < 150, series
    assert refused == 200_000
    deadline = time.monotonic() + 10
    while counted() < refused and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counted() == refused  # every refused connect counted, folded into remote="other" or not
    assert len(d.samples("errnomon_socket_errors_total", comm=comm)) <= 101  # the budget and our "other" row
    assert d.stop() == 0
