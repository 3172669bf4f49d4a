"""A busy node's sockets: 100,000 TCP sockets (50,000 loopback connections) open before errnomon starts.

Every reset on any of them must carry its process and service port, whichever side sends it. Ground truth:
what tests/bpf/many_connections.py itself aborted (SO_LINGER {1, 0}), per service port.
"""

import os
import socket
import subprocess
import sys
import time

import pytest

from . import scenarios
from .conftest import TEST_CONFIG, Daemon, _require_environment

pytestmark = pytest.mark.bpf

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "many_connections.py")
CONNECTIONS = 50000
PORTS = 4        # one server and one client process per port: 12,500 connections each, within a 20,000-file limit
RESETS = 100


def comm(name):
    return ("%s%s" % (scenarios.RUN_TAG, name))[:15]


class Side:
    def __init__(self, role, who, port, n):
        self.proc = subprocess.Popen([sys.executable, HELPER, role, who, str(port), "1", str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self):
        out = self.proc.stdout.readline()
        if not out:
            self.proc.wait(30)
            raise AssertionError("many_connections exited with %s: %s" % (self.proc.returncode,
                                                                         self.proc.stderr.read()))
        return out.split()

    def reset(self, k):
        self.proc.stdin.write("reset %d\n" % k)
        self.proc.stdin.flush()
        words = self.line()
        assert words[0] == "reset", words
        return {int(p): int(n) for p, n in (kv.split(":") for kv in words[1].split(","))}

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def by_port(daemon, name, who):
    """{port label: value summed over the other labels} of one metric's samples of comm `who`."""
    out = {}
    for labels, value in daemon.samples(name, comm=who).items():
        port = dict(labels)["port"]
        out[port] = out.get(port, 0) + value
    return out


def free_ports(n):
    """The first of n consecutive free ports below the ephemeral range, so that no client takes them."""
    for base in range(20000, 30000, n):
        if all(_free(base + i) for i in range(n)):
            return base
    raise AssertionError("no %d consecutive free ports in 20000-29999" % n)


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Crowd:
    """PORTS server processes (one port each) and PORTS clients, n connections in all, all ready."""

    def __init__(self, n):
        self.srv, self.cli = comm("many_srv"), comm("many_cli")
        base = free_ports(PORTS)
        self.servers, self.clients = [], []
        try:
            self.servers = [Side("server", self.srv, base + i, n // PORTS) for i in range(PORTS)]
            for side in self.servers:
                assert side.line() == ["listening"]
            self.clients = [Side("client", self.cli, base + i, n // PORTS) for i in range(PORTS)]
            for side in self.clients + self.servers:
                assert side.line() == ["ready", str(n // PORTS)]
        except BaseException:
            self.stop()
            raise

    def resets(self):
        """({port: resets} the clients sent, {port: resets} the servers sent), RESETS each."""
        by_client, by_server = {}, {}
        for sides, into in ((self.clients, by_client), (self.servers, by_server)):
            for side in sides:
                into.update(side.reset(RESETS // PORTS))
        assert sum(by_client.values()) == sum(by_server.values()) == RESETS
        return by_client, by_server

    def stop(self):
        for side in self.clients + self.servers:
            side.stop()


def wait_until(d, expected, read):
    deadline = time.monotonic() + 15
    while True:
        got = [(name, who, read(d, name, who)) for name, who, _ in expected]
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_every_reset_on_100000_sockets_opened_before_start_has_its_process_and_port(tmp_path):
    _require_environment()
    crowd, d = Crowd(CONNECTIONS), None
    try:
        d = Daemon(tmp_path, name="many")
        by_client, by_server = crowd.resets()
        expected = [(name, who, {str(p): n for p, n in counts.items()}) for name, who, counts in (
            ("errnomon_tcp_resets_sent_total", crowd.cli, by_client),
            ("errnomon_tcp_resets_received_total", crowd.srv, by_client),
            ("errnomon_tcp_resets_sent_total", crowd.srv, by_server),
            ("errnomon_tcp_resets_received_total", crowd.cli, by_server))]
        got = wait_until(d, expected, by_port)
        unattributed = {name: by_port(d, name, "") for name, _, _ in expected}
        assert got == expected, "unattributed: %s" % unattributed
    finally:
        crowd.stop()
        rc = d.stop() if d else 0
    assert rc == 0, d.output()


def test_resets_of_sockets_whose_owner_was_evicted_keep_their_service_port(tmp_path):
    """An owner table far too small (max_sockets 1024 for 8,000 sockets): most resets carry no process, but
    every one still carries its service port, an aborting close's included (its bound port is already put
    back when the reset goes out)."""
    _require_environment()
    crowd, d = Crowd(4000), None
    try:
        d = Daemon(tmp_path, config_text=TEST_CONFIG.replace("kernel:\n", "kernel:\n  max_sockets: 1024\n"),
                   name="evicted")
        by_client, by_server = crowd.resets()
        both = {str(p): by_client.get(p, 0) + by_server.get(p, 0) for p in set(by_client) | set(by_server)}
        expected = [(name, "", both) for name in ("errnomon_tcp_resets_sent_total",
                                                   "errnomon_tcp_resets_received_total")]

        def any_comm(daemon, name, _):
            out = {}
            for who in ("", crowd.cli, crowd.srv):
                for port, n in by_port(daemon, name, who).items():
                    out[port] = out.get(port, 0) + n
            return out
        got = wait_until(d, expected, any_comm)
        assert got == expected
        assert by_port(d, "errnomon_tcp_resets_sent_total", "")  # the table was too small: some unattributed
    finally:
        crowd.stop()
        rc = d.stop() if d else 0
    assert rc == 0, d.output()
