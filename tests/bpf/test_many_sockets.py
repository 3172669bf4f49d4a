"""A busy node's sockets: 100,000 TCP sockets (50,000 loopback connections) open before errnomon starts.

Every reset on any of them must carry its process and service port, whichever side sends it. Ground truth:
what tests/bpf/many_connections.py itself aborted (SO_LINGER {1, 0}), per service port.
"""

import os
import subprocess
import sys
import time

import pytest

from . import scenarios
from .conftest import Daemon, _require_environment

pytestmark = pytest.mark.bpf

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "many_connections.py")
CONNECTIONS = 50000
PORTS = 4        # one server and one client process per port: 12,500 connections each, within a 20,000-file limit
RESETS = 100


def comm(name):
    return ("%s%s" % (scenarios.RUN_TAG, name))[:15]


class Side:
    def __init__(self, role, who, port):
        self.proc = subprocess.Popen([sys.executable, HELPER, role, who, str(port), "1", str(CONNECTIONS // PORTS)],
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
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_every_reset_on_100000_sockets_opened_before_start_has_its_process_and_port(tmp_path):
    _require_environment()
    srv_comm, cli_comm = comm("many_srv"), comm("many_cli")
    base = free_ports(PORTS)
    servers, clients, d = [], [], None
    try:
        servers = [Side("server", srv_comm, base + i) for i in range(PORTS)]
        for side in servers:
            assert side.line() == ["listening"]
        clients = [Side("client", cli_comm, base + i) for i in range(PORTS)]
        for side in clients + servers:
            assert side.line() == ["ready", str(CONNECTIONS // PORTS)]
        d = Daemon(tmp_path, name="many")
        # the clients send these resets and the servers receive them; then the other way round
        by_client, by_server = {}, {}
        for sides, into in ((clients, by_client), (servers, by_server)):
            for side in sides:
                into.update(side.reset(RESETS // PORTS))
        assert sum(by_client.values()) == sum(by_server.values()) == RESETS
        expected = [(name, who, {str(p): n for p, n in counts.items()}) for name, who, counts in (
            ("errnomon_tcp_resets_sent_total", cli_comm, by_client),
            ("errnomon_tcp_resets_received_total", srv_comm, by_client),
            ("errnomon_tcp_resets_sent_total", srv_comm, by_server),
            ("errnomon_tcp_resets_received_total", cli_comm, by_server))]
        deadline = time.monotonic() + 15
        while True:
            got = [(name, who, by_port(d, name, who)) for name, who, _ in expected]
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        unattributed = {name: by_port(d, name, "") for name, _, _ in expected}
        assert got == expected, "unattributed: %s" % unattributed
    finally:
        for side in clients + servers:
            side.stop()
        rc = d.stop() if d else 0
    assert rc == 0, d.output()
