"""Listen-queue drops per listener, exact against the listener's own drop counter (ss -ltnm d<N>) and its
network namespace's ListenDrops, for listeners of any lifetime and of either age (opened before or after
errnomon started).

Each test runs tests/bpf/listen_flood.py in a network namespace of its own (created and always deleted), so
that the namespace's ListenDrops counts that listener alone.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from . import scenarios
from .conftest import Daemon, _require_environment, function_exists

pytestmark = pytest.mark.bpf

FLOOD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "listen_flood.py")
PORT = 8080
_seq = [0]


class Namespace:
    """A network namespace with its loopback up; deleted on exit."""

    def __init__(self, tag):
        _seq[0] += 1
        self.name = "%s%s%d-%d" % (scenarios.RUN_TAG, tag, os.getpid() % 100000, _seq[0])

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=10)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=10)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], timeout=10)


class Flood:
    """listen_flood.py running in a namespace: read() its JSON lines, resume() it after a pause."""

    def __init__(self, netns, comm, family, steps):
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, FLOOD, comm, family, str(PORT)]
                                     + steps, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError("listen_flood exited with %s: %s" % (self.proc.returncode, self.proc.stderr.read()))
        return json.loads(line)

    def resume(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self):
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]


def comm(name):
    return ("%s%s" % (scenarios.RUN_TAG, name))[:15]


def drops(daemon, who, expected, timeout=8.0):
    daemon.wait_for("errnomon_listen_drops_total", [(dict(comm=who, port=str(PORT)), expected)], timeout=timeout,
                    comm=who)


@pytest.mark.parametrize("family", ["4", "6"])
def test_a_listener_that_lives_under_a_second_has_every_drop_counted(daemon, family):
    """Opened, flooded and closed between two polls of the daemon: counted at its close, in the kernel."""
    who = comm("lsshort" + family)
    with Namespace("lss") as ns:
        f = Flood(ns.name, who, family, ["listen", "burst:8", "report", "close", "report"])
        before, after = f.finish()
    assert before["age"] < 1.0
    assert before["drops"] >= 6  # eight connects, a queue of two
    assert before["drops"] == after["listen_drops"] == after["listen_overflows"]
    drops(daemon, who, before["drops"])


def test_drops_counted_while_the_listener_lives_and_its_last_ones_at_its_close(daemon):
    who = comm("lslast")
    with Namespace("lsl") as ns:
        f = Flood(ns.name, who, "4", ["listen", "burst:6", "report", "pause", "burst:6", "report", "close", "report"])
        first = f.read()
        assert f.read() == {"paused": True}
        drops(daemon, who, first["drops"], timeout=15.0)  # the sweep of a daemon poll (every 5 s)
        f.resume()
        last, closed = f.finish()
    assert last["drops"] > first["drops"] >= 4
    assert last["drops"] == closed["listen_drops"] == closed["listen_overflows"]
    drops(daemon, who, last["drops"])


def test_listeners_older_than_errnomon_count_their_drops_after_its_start(tmp_path):
    """Found at start-up in another network namespace. Where the kernel has the tcp iterator (bpf_iter_tcp in
    its BTF, 5.9+), handed to the programs, which count their drops like those of newer listeners: the last
    ones, made just before the close and never seen by a poll, included. Elsewhere read there with sock_diag
    at each poll until they close."""
    _require_environment()
    who = comm("lsold")
    with Namespace("lso") as ns:
        f = Flood(ns.name, who, "4", ["listen", "burst:6", "report", "pause", "burst:6", "report", "pause",
                                      "burst:6", "close", "report"])
        try:
            before = f.read()
            assert f.read() == {"paused": True}
            d = Daemon(tmp_path, name="lsold")
            try:
                f.resume()
                after = f.read()
                assert f.read() == {"paused": True}
                assert after["drops"] > before["drops"] >= 4
                # the drops before the start are not errnomon's to report
                drops(d, who, after["drops"] - before["drops"], timeout=15.0)
                f.resume()
                closed = f.finish()[-1]
                assert closed["drops"] is None and closed["listen_drops"] > after["listen_drops"]
                if kernel_has_tcp_iterator():
                    drops(d, who, closed["listen_drops"] - before["listen_drops"], timeout=15.0)
                    assert re.search(r"\b[1-9]\d* listeners older than errnomon handed to the programs", d.output())
                else:
                    drops(d, who, after["drops"] - before["drops"])
            finally:
                if f.proc.poll() is None:
                    f.resume()
                    f.finish()
                rc = d.stop()
        finally:
            if f.proc.poll() is None:
                f.proc.kill()
    assert rc == 0, d.output()


def kernel_has_tcp_iterator():
    """bpf_iter_tcp, the tcp iterator's target function (5.9+), in the kernel's own symbol table."""
    return function_exists("bpf_iter_tcp")


def test_the_fallback_rung_without_btf_polls_every_namespace(tmp_path, monkeypatch):
    """Without sk_drops' place (no kernel BTF) the programs cannot read the counter: every poll dumps every
    namespace's listeners with sock_diag, and a listener alive at a poll has its drops counted exactly."""
    _require_environment()
    monkeypatch.setenv("ERRNOMON_KERNEL_BTF", str(tmp_path / "no-vmlinux"))
    who = comm("lspoll")
    d = Daemon(tmp_path, name="lspoll")
    try:
        with Namespace("lsp") as ns:
            f = Flood(ns.name, who, "4", ["listen", "burst:6", "report", "pause", "close"])
            try:
                first = f.read()
                assert f.read() == {"paused": True}
                assert first["drops"] == first["listen_drops"] >= 4
                drops(d, who, first["drops"], timeout=15.0)
            finally:
                f.resume()
                f.finish()
    finally:
        rc = d.stop()
    assert rc == 0, d.output()
    assert "listen drops are read by polling" in d.output()
