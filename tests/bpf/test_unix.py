"""Errors on unix stream and seqpacket sockets: exact counts and labels, against what the programs saw.

remote is the peer's socket path (the listener's, for a client), "@name" for an abstract name, "unnamed" for
a peer without an address (socketpair); port is empty. Each test's errors come from a child with its own
comm (tests/bpf/unix_scenarios.py) and the whole set of series with that comm is compared.
"""

import os
import signal
import socket
import time

import pytest

from . import real_programs as rp
from . import unix_scenarios as ux
from .conftest import Daemon, _require_environment
from .test_errors import expect

pytestmark = pytest.mark.bpf

STREAM_KINDS = pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET],
                                       ids=["stream", "seqpacket"])
BUDGET = 20
POOL_GROUP = "uxpool"
MANY_GROUP = "uxmany"
MANY_DIR = "/nonexistent-ux-many"  # connect() to paths under it: ENOENT, nothing made on disk
SMALL_CONFIG = """
remote:
  groups:
    - name: %s
      paths: ["/tmp/*/ux-pool-*.sock", "@ux-pool-*"]
series:
  budget: %d
kernel:
  drain_interval: 500ms
  syscall_tracepoints: true
""" % (POOL_GROUP, BUDGET)
MANY_CONFIG = """
remote:
  groups:
    - name: %s
      paths: ["%s/*"]
kernel:
  drain_interval: 500ms
  syscall_tracepoints: true
""" % (MANY_GROUP, MANY_DIR)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A daemon with path groups and a small series budget."""
    _require_environment()
    d = Daemon(tmp_path_factory.mktemp("errnomon-ux"), config_text=SMALL_CONFIG, name="errnomon-ux")
    yield d
    assert d.stop() == 0, d.output()


@pytest.fixture
def sock_dir(tmp_path):
    """A short directory for socket paths (sun_path holds 108 bytes)."""
    path = tmp_path / "s"
    path.mkdir()
    return str(path)


def errors(daemon, comm, *series):
    """errnomon_socket_errors_total of comm is exactly series: (errno, op, remote, count)."""
    expect(daemon, comm, "errnomon_socket_errors_total",
           *((dict(errno=e, op=op, remote=remote, port=""), n) for e, op, remote, n in series))


def counted(daemon, comm, n, timeout=10.0):
    """The socket_errors series of comm once they add up to n, and two drain intervals later (nothing more
    arrives): {labels: value}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = daemon.samples("errnomon_socket_errors_total", comm=comm)
        if sum(got.values()) == n:
            time.sleep(1.2)
            break
        time.sleep(0.2)
    got = daemon.samples("errnomon_socket_errors_total", comm=comm)
    assert sum(got.values()) == n, got
    return got


@STREAM_KINDS
def test_reset_on_recv(daemon, sock_dir, kind):
    """The server closes with the request unread (nginx: "recv() failed (104: Connection reset by peer)")."""
    path = os.path.join(sock_dir, "ux.sock")
    r = ux.reset_on_recv("uxr%d" % kind, path, kind)
    assert r.calls == [("connect", "OK"), ("send", "OK"), ("recv", "ECONNRESET"), ("recv", "OK")]
    errors(daemon, r.comm, ("ECONNRESET", "recv", path, 1))
    expect(daemon, r.comm, "errnomon_sigpipe_total")


def test_abstract_remote(daemon):
    """An abstract name is "@name"; a byte that is not printable is escaped."""
    name = "ux-abs-%d\x01" % os.getpid()
    r = ux.reset_on_recv("uxab", "\0" + name)
    assert r.errnos() == ["ECONNRESET"]
    errors(daemon, r.comm, ("ECONNRESET", "recv", "@ux-abs-%d\\x01" % os.getpid(), 1))


@STREAM_KINDS
def test_socketpair_is_unnamed(daemon, kind):
    r = ux.socketpair_reset("uxp%d" % kind, kind)
    assert r.calls == [("send", "OK"), ("recv", "ECONNRESET"), ("send", "EPIPE")]
    errors(daemon, r.comm, ("ECONNRESET", "recv", "unnamed", 1), ("EPIPE", "send", "unnamed", 1))


@STREAM_KINDS
def test_epipe_nosignal(daemon, sock_dir, kind):
    path = os.path.join(sock_dir, "ux.sock")
    r = ux.epipe("uxe%d" % kind, path, kind, sends=3)
    assert r.errnos("send") == ["EPIPE"] * 3
    errors(daemon, r.comm, ("EPIPE", "send", path, 3))
    expect(daemon, r.comm, "errnomon_sigpipe_total")  # MSG_NOSIGNAL: none raised


def test_epipe_sigpipe_ignored(daemon, sock_dir):
    path = os.path.join(sock_dir, "ux.sock")
    r = ux.epipe("uxsi", path, sends=2, flags=0, sigpipe=signal.SIG_IGN)
    assert r.errnos("send") == ["EPIPE", "EPIPE"] and r.signal is None
    errors(daemon, r.comm, ("EPIPE", "send", path, 2))
    expect(daemon, r.comm, "errnomon_sigpipe_total", (dict(action="ignored"), 2))


def test_epipe_sigpipe_killed(daemon, sock_dir):
    """SIG_DFL: the first EPIPE send's SIGPIPE kills the client; the send still failed with EPIPE."""
    path = os.path.join(sock_dir, "ux.sock")
    r = ux.epipe("uxsk", path, sends=2, flags=0, sigpipe=signal.SIG_DFL)
    assert r.signal == signal.SIGPIPE
    assert r.calls == [("connect", "OK")]  # killed inside its first send
    errors(daemon, r.comm, ("EPIPE", "send", path, 1))
    expect(daemon, r.comm, "errnomon_sigpipe_total", (dict(action="killed"), 1))


def test_connect_errors(daemon, sock_dir):
    """ECONNREFUSED: a socket bound but not listening, a listener closed (its file stays), an abstract name
    nobody holds; ENOENT: no such path."""
    bound, closed, missing = (os.path.join(sock_dir, n) for n in ("bound.sock", "closed.sock", "missing.sock"))
    abstract = "ux-none-%d" % os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as b:
        b.bind(bound)
        ux.listener(closed).close()
        r = ux.connects("uxcf", [bound, closed, closed, missing, "\0" + abstract])
    assert r.errnos() == ["ECONNREFUSED"] * 3 + ["ENOENT", "ECONNREFUSED"]
    errors(daemon, r.comm, ("ECONNREFUSED", "connect", bound, 1), ("ECONNREFUSED", "connect", closed, 2),
           ("ENOENT", "connect", missing, 1), ("ECONNREFUSED", "connect", "@" + abstract, 1))


def test_connect_backlog_full(daemon, sock_dir):
    """A non-blocking connect() to a listener whose backlog is full fails with EAGAIN (never EINPROGRESS),
    counted although kernel.count leaves EAGAIN out."""
    path = os.path.join(sock_dir, "ux.sock")
    with ux.listener(path, backlog=1):
        r = ux.connects("uxbl", [path] * 6, blocking=False)
    eagain = r.count("connect", "EAGAIN")
    assert eagain >= 3 and r.errnos() == ["EAGAIN"] * eagain
    errors(daemon, r.comm, ("EAGAIN", "connect", path, eagain))


def test_paths_group_folds(small, sock_dir):
    """remote.groups[].paths: per-request paths and abstract names fold into one group."""
    paths = [os.path.join(sock_dir, "ux-pool-%d.sock" % i) for i in range(5)]
    names = ["\0ux-pool-%d-%d" % (os.getpid(), i) for i in range(3)]
    r = ux.connects("uxgp", paths + names)
    assert r.errnos() == ["ENOENT"] * 5 + ["ECONNREFUSED"] * 3
    errors(small, r.comm, ("ENOENT", "connect", POOL_GROUP, 5), ("ECONNREFUSED", "connect", POOL_GROUP, 3))


def test_series_budget_bounds_paths(small, sock_dir):
    """More distinct paths than the series budget: the rest fold into remote="other", every error counted."""
    n = 3 * BUDGET
    paths = [os.path.join(sock_dir, "ux-b%d.sock" % i) for i in range(n)]
    r = ux.connects("uxbd", paths)
    assert r.errnos() == ["ENOENT"] * n
    got = counted(small, r.comm, n)
    remotes = {dict(k)["remote"] for k in got}
    assert "other" in remotes and len(remotes - {"other"}) <= BUDGET
    assert remotes - {"other"} <= set(paths)
    series = small.samples("errnomon_series", metric="errnomon_socket_errors_total")
    assert list(series.values())[0] <= BUDGET + max(10, BUDGET // 10)


def test_unix_paths_map_is_bounded(tmp_path):
    """More paths in one drain interval than unix_paths keeps (UNIX_PATHS, LRU): those evicted before the
    daemon decoded their keys are remote="unknown"; every error is counted."""
    _require_environment()
    d = Daemon(tmp_path, config_text=MANY_CONFIG, name="errnomon-ux-many")
    try:
        # more paths than the table keeps (4096), all before the daemon reads one: it is stopped meanwhile,
        # so the burst's speed (a qemu guest's is slow) cannot change what is evicted; the counts wait in
        # the kernel's map (16384 keys)
        n = 6000
        d.signal(signal.SIGSTOP)
        try:
            r = ux.connects("uxmn", ["%s/%d" % (MANY_DIR, i) for i in range(n)], hold=False, limit=180)
        finally:
            d.signal(signal.SIGCONT)
        assert r.errnos() == ["ENOENT"] * n
        got = counted(d, r.comm, n)
        by_remote = {dict(k)["remote"]: v for k, v in got.items()}
        print("%d paths in one burst: %s" % (n, by_remote))  # shown with pytest -s
        assert set(by_remote) == {MANY_GROUP, "unknown"}, by_remote
    finally:
        assert d.stop() == 0, d.output()


def test_nginx_unix_upstream_resets(daemon, tmp_path):
    """nginx proxying to a unix-socket upstream that closes with the request unread: nginx logs
    "recv() failed (104: Connection reset by peer) while reading response header from upstream" for each
    request, and errnomon counts exactly the calls nginx logged, remote = the upstream's path."""
    n = 4
    path = str(tmp_path / "ux-up.sock")
    upstream = ux.ClosingUpstream(path, n)
    location = "        location / { proxy_pass http://unix:%s:/; }\n" % path
    with rp.Nginx(str(tmp_path), locations=location) as nginx:
        statuses = [rp.http_get(nginx.port, "/")[0] for _ in range(n)]
        upstream.join()
        time.sleep(0.3)  # the worker writes its log line after the failed read
        log = nginx.log()
    assert upstream.handled == n
    logged = {}
    for line in log.splitlines():
        m = rp.NGINX_FAILED.search(line)
        if m and 'upstream: "http://unix:%s:' % path in line:
            key = (rp.NGINX_OPS[m.group(1)], rp.errno_name(m.group(2)))
            logged[key] = logged.get(key, 0) + 1
    print("nginx's own account: %s; statuses %s; e.g. %s" % (logged, statuses, next(
        (line for line in log.splitlines() if rp.NGINX_FAILED.search(line)), None)))
    assert logged == {("recv", "ECONNRESET"): n}, log
    assert all(" 502 " in s for s in statuses), statuses
    daemon.wait_for("errnomon_socket_errors_total",
                    [(dict(comm="nginx", remote=path, port="", op=op, errno=e), c) for (op, e), c in logged.items()],
                    comm="nginx", remote=path)


SYSCALL_RUNG_CONFIG = """
kernel:
  drain_interval: 500ms
  syscall_tracepoints: true
  function_hooks: []
"""


def test_syscall_rung(tmp_path, sock_dir):
    """Kernels before 6.3 without function hooks: the send/recv system calls' tracepoints find the socket
    from the fd, unix ones included (run here with the sock_*_length tracepoints ignored)."""
    _require_environment()
    d = Daemon(tmp_path, config_text=SYSCALL_RUNG_CONFIG, name="errnomon-ux-syscalls",
               env={"ERRNOMON_IGNORE_TRACEPOINTS": "sock:sock_send_length,sock:sock_recv_length"})
    try:
        attached = d.samples("errnomon_probe_attached", signal="recv_errors")
        assert {dict(k)["probe"] for k, v in attached.items() if v == 1} >= {"syscalls:sys_exit_recvfrom"}
        path = os.path.join(sock_dir, "ux.sock")
        r = ux.reset_on_recv("uxsy", path)
        assert r.errnos() == ["ECONNRESET"]
        errors(d, r.comm, ("ECONNRESET", "recv", path, 1))
        p = ux.socketpair_reset("uxsp")
        assert p.errnos() == ["ECONNRESET", "EPIPE"]
        errors(d, p.comm, ("ECONNRESET", "recv", "unnamed", 1), ("EPIPE", "send", "unnamed", 1))
    finally:
        assert d.stop() == 0, d.output()
