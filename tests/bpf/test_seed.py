"""Attribution survives a restart: sockets opened before errnomon started are seeded at start-up.

A server (listener + two accepted connections) and its client exist before a fresh daemon starts; both run
in a cgroup of their own, so the unit label proves the seeded cgroup id is the one bpf_get_current_cgroup_id()
gives. One old connection is reset (resets sent and received, error report, the client's ECONNRESET), the
other closed in order (each side's FIN); then a new connection from the old listener is reset. Ground truth: the actors' own pids, comms, cgroup and the errno their calls returned.
"""

import errno
import json
import os
import socket
import struct
import traceback

import pytest

from monitor import cgroups
from . import scenarios
from .conftest import Daemon, _require_environment, kernel_reset_reason

# pid and unit labels: the seeded tgid and cgroup id must be the kernel's. Room for a host with many sockets
# and for other test runs' error storms (every daemon counts the whole host).
CONFIG = """
series:
  budget: 20000
kernel:
  drain_interval: 500ms
  syscall_tracepoints: true
  map_size: 131072
  max_sockets: 262144
labels:
  pid: true
  unit: true
"""
TIMEOUT = 5.0


def _actor(comm, cgroup_dir, commands, replies):
    """Child: name itself, join the cgroup, then run one command per line ("<cmd> <connection name> ...") and
    answer each with a JSON line."""
    scenarios._set_comm(comm)
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write("0")  # this process
    listener, conns = None, {}
    for line in iter(commands.readline, ""):
        cmd, *arg = line.split()
        if cmd == "listen":
            family = int(arg[0])
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.settimeout(TIMEOUT)
            listener.bind((scenarios._loopback(family), 0))
            listener.listen(16)
            answer = listener.getsockname()[1]
        elif cmd == "accept":
            conns[arg[0]], _ = listener.accept()
            conns[arg[0]].settimeout(TIMEOUT)
            answer = "OK"
        elif cmd == "connect":
            family, port = int(arg[1]), int(arg[2])
            conns[arg[0]] = socket.create_connection((scenarios._loopback(family), port), timeout=TIMEOUT)
            answer = "OK"
        elif cmd == "reset":  # abort: RST
            conns[arg[0]].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conns.pop(arg[0]).close()
            answer = "OK"
        elif cmd == "close":  # orderly: FIN
            conns.pop(arg[0]).close()
            answer = "OK"
        elif cmd == "recv":
            try:
                answer = "EOF" if conns[arg[0]].recv(64) == b"" else "DATA"
            except OSError as e:
                answer = errno.errorcode.get(e.errno, str(e.errno))
        else:
            return
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


class Actor:
    def __init__(self, role, cgroup_dir):
        self.comm = scenarios.make_comm("sd", role)
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(cmd_w)
                os.close(rep_r)
                _actor(self.comm, cgroup_dir, os.fdopen(cmd_r), os.fdopen(rep_w, "w"))
                code = 0
            except BaseException:  # say why in the test's output: the parent only sees the pipe close
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(rep_w)
        self.commands = os.fdopen(cmd_w, "w")
        self.replies = os.fdopen(rep_r)

    def __call__(self, *cmd):
        # int(): before Python 3.11, str(socket.AF_INET) is 'AddressFamily.AF_INET'
        self.commands.write(" ".join(str(int(c)) if isinstance(c, int) else c for c in cmd) + "\n")
        self.commands.flush()
        line = self.replies.readline()
        assert line, "%s died running %s" % (self.comm, cmd)
        return json.loads(line)

    def stop(self):
        try:
            self.commands.write("exit\n")
            self.commands.close()
        except OSError:  # the actor died: its end of the pipe is gone
            pass
        _, status = os.waitpid(self.pid, 0)
        self.replies.close()
        return status


@pytest.fixture
def cgroup_dir():
    _require_environment()
    mount = cgroups.cgroup2_mount()
    assert mount, "no cgroup2 hierarchy mounted (see /proc/self/mountinfo): cannot check cgroup ids"
    path = os.path.join(mount, "%sseed%d" % (scenarios.RUN_TAG, os.getpid()))
    os.mkdir(path)
    yield path
    os.rmdir(path)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_sockets_opened_before_start_keep_their_owner(tmp_path, cgroup_dir, family):
    srv, cli = Actor("srv", cgroup_dir), Actor("cli", cgroup_dir)
    daemon = None
    try:
        port = srv("listen", family)
        for name in ("reset", "fin"):
            assert cli("connect", name, family, port) == "OK"
            assert srv("accept", name) == "OK"
        # only now errnomon starts: the listener and both ends of both connections exist already
        daemon = Daemon(tmp_path, CONFIG, name="seeded")
        assert "seeded " in daemon.output()

        assert srv("reset", "reset") == "OK"
        assert cli("recv", "reset") == "ECONNRESET"
        unit = os.path.basename(cgroup_dir)
        peer = dict(remote=scenarios._loopback(family), port=str(port), unit=unit)
        c, s = dict(peer, comm=cli.comm, pid=str(cli.pid)), dict(peer, comm=srv.comm, pid=str(srv.pid))

        misses = []

        def expect(who, metric, value, **labels):
            """Every expectation is checked and every miss reported at the end: on an older kernel the
            signals it lacks are named beside the seeded ones that hold."""
            try:
                daemon.wait_for(metric, [(dict(who, **labels), value)], comm=who["comm"])
            except AssertionError as e:
                misses.append(str(e))

        expect(c, "errnomon_socket_errors_total", 1, errno="ECONNRESET", op="recv")
        expect(c, "errnomon_socket_error_reports_total", 1, errno="ECONNRESET")
        expect(c, "errnomon_tcp_resets_received_total", 1, state="ESTABLISHED")
        expect(s, "errnomon_tcp_resets_sent_total", 1, reason=kernel_reset_reason("TCP_STATE"))

        # orderly close of the other old connection: each side's FIN is its own
        assert cli("close", "fin") == "OK"
        assert srv("recv", "fin") == "EOF"
        assert srv("close", "fin") == "OK"
        expect(c, "errnomon_tcp_fins_sent_total", 1)
        expect(s, "errnomon_tcp_fins_sent_total", 1)

        # a connection accepted after start-up from the listener that existed before: the listener's process
        assert cli("connect", "new", family, port) == "OK"
        assert srv("accept", "new") == "OK"
        assert srv("reset", "new") == "OK"
        assert cli("recv", "new") == "ECONNRESET"
        expect(s, "errnomon_tcp_resets_sent_total", 2, reason=kernel_reset_reason("TCP_STATE"))
        expect(c, "errnomon_socket_errors_total", 2, errno="ECONNRESET", op="recv")
        expect(c, "errnomon_socket_error_reports_total", 2, errno="ECONNRESET")
        expect(c, "errnomon_tcp_resets_received_total", 2, state="ESTABLISHED")
        # seeded connections are past their handshake: their errors are not failed connection attempts
        daemon.wait_for("errnomon_connect_failures_total", [], comm=cli.comm)
        assert not misses, "%d expectations missed:\n%s" % (len(misses), "\n".join(misses))
    finally:
        stopped = srv.stop(), cli.stop()  # both, always: a process left in the cgroup keeps it busy
        assert stopped == (0, 0)
        if daemon is not None:
            rc = daemon.stop()
            assert rc == 0, "errnomon did not exit cleanly on SIGTERM (%s):\n%s" % (rc, daemon.output())
