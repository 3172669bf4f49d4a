"""monitor/daemon.py without BPF: signals only recorded (a burst cannot deadlock), reloads in a worker."""

import os
import subprocess
import sys
import textwrap
import threading
import time

from monitor import config
from monitor.daemon import Reloader

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BURST = textwrap.dedent("""
    import os, signal, sys, threading, time
    from monitor.daemon import Signals
    s = Signals()
    def burst():
        for _ in range(2000):
            os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
    wakes = hups = 0
    threading.Thread(target=burst).start()
    deadline = time.monotonic() + 30
    while s.stop is None and time.monotonic() < deadline:
        hups += s.take_hup()
        s.wait(1.0)
        wakes += 1
    print(s.stop, hups + s.take_hup() > 0, wakes)
""")


def test_sighup_burst_then_sigterm_stops_the_loop():
    for attempt in range(5):  # each run is a fresh chance to hit the old deadlock
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", BURST], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        stop, hups, wakes = proc.stdout.split()
        assert (stop, hups) == ("SIGTERM", "True"), proc.stdout
        assert time.monotonic() - t0 < 30


def wait_done(reloader, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = reloader.done()
        if result is not None:
            return result
        time.sleep(0.01)
    raise AssertionError("reload did not finish")


def test_reloader_reads_in_a_thread_and_reports(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("series: {budget: 7}\n")
    woken = threading.Event()
    r = Reloader(str(path), woken.set)
    assert r.done() is None  # nothing asked
    r.request()
    assert wait_done(r) == (config.Config(budget=7), None)
    assert woken.is_set()

    os.unlink(path)
    os.mkfifo(path)  # nothing ever writes: a blocking open would hang the reload forever
    r.request()
    assert wait_done(r) == (None, "%s: cannot read config file: it is a FIFO, not a regular file: point "
                                  "--config.file at a YAML file" % path)


def test_reloader_coalesces_requests_while_reading(tmp_path, monkeypatch):
    gate = threading.Event()
    reads = []

    def slow_load(p):
        reads.append(p)
        gate.wait(10)
        return config.Config(budget=len(reads))
    monkeypatch.setattr(config, "load", slow_load)
    r = Reloader("x.yaml", lambda: None)
    r.request()
    for _ in range(1000):
        r.request()  # a SIGHUP burst while the first read runs
    assert r.done() is None
    gate.set()
    assert wait_done(r) == (config.Config(budget=1), None)
    assert wait_done(r) == (config.Config(budget=2), None)  # exactly one more read for the whole burst
    assert r.done() is None and reads == ["x.yaml", "x.yaml"]


def test_reloader_survives_any_exception(monkeypatch):
    def boom(p):
        raise MemoryError()
    monkeypatch.setattr(config, "load", boom)
    r = Reloader("x.yaml", lambda: None)
    r.request()
    assert wait_done(r) == (None, "x.yaml: cannot load the config (MemoryError): check it with --config.check")
