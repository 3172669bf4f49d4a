"""Real errors on unix stream and seqpacket sockets, each made by a forked child with a distinctive comm.

A child names itself (prctl) before it makes any socket, makes its calls and reports what each one returned
(the errno names, in order) over a pipe, one JSON object per line, written as it goes: a child SIGPIPE kills
has reported its calls up to the fatal one. The parent waits with a deadline and kills what is left. The
tests compare errnomon's counts with these reports, never with errnomon's own code.
"""

import errno
import json
import os
import select
import signal
import socket
import time

from .real_programs import ThreadServer
from .scenarios import _set_comm, make_comm

DEADLINE = 15.0


def _errname(e):
    return errno.errorcode.get(e.errno, "E%d" % e.errno) if isinstance(e, OSError) and e.errno else type(e).__name__


class Reporter:
    def __init__(self, fd):
        self.fd = fd

    def put(self, **kv):
        os.write(self.fd, (json.dumps(kv) + "\n").encode())

    def call(self, op, fn, *args):
        """Runs one socket call; reports {"op", "errno"} ("OK" for success). Returns the result or None."""
        try:
            result = fn(*args)
        except OSError as e:
            self.put(op=op, errno=_errname(e))
            return None
        self.put(op=op, errno="OK")
        return result


class Result:
    def __init__(self, comm, lines, status):
        self.comm = comm
        self.calls = [(d["op"], d["errno"]) for d in lines if "op" in d]
        self.info = {k: v for d in lines for k, v in d.items() if k not in ("op", "errno")}
        self.signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        self.code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None

    def errnos(self, op=None):
        """Failed calls' errno names, in order (of one op, if given)."""
        return [e for o, e in self.calls if e != "OK" and (op is None or o == op)]

    def count(self, op, name):
        return sum(1 for o, e in self.calls if o == op and e == name)


def run_as(comm_prefix, role, fn, *args, sigpipe=signal.SIG_IGN, allow_signal=None, limit=DEADLINE):
    """fn(reporter, *args) in a child named make_comm(comm_prefix, role), given `limit` seconds."""
    comm = make_comm(comm_prefix, role)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the caller
        code = 0
        try:
            os.close(r)
            _set_comm(comm)
            signal.signal(signal.SIGPIPE, sigpipe)
            fn(Reporter(w), *args)
        except BaseException as e:  # reported, and a non-zero exit
            try:
                os.write(w, (json.dumps({"exception": repr(e)}) + "\n").encode())
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(w)
    data, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:  # the pipe closes just before the child exits
        time.sleep(0.01)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise RuntimeError("%s did not finish within %.0f s" % (comm, limit))
    result = Result(comm, [json.loads(line) for line in data.decode().splitlines()], status)
    if "exception" in result.info:
        raise RuntimeError("%s failed: %s" % (comm, result.info["exception"]))
    if result.signal is not None and result.signal != allow_signal or result.code not in (0, None):
        raise RuntimeError("%s ended with signal %s, exit %s" % (comm, result.signal, result.code))
    return result


def listener(address, kind=socket.SOCK_STREAM, backlog=8):
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(address)
    s.listen(backlog)
    return s


def accept_unread(ls, closer, timeout=5.0):
    """Accepts one connection, waits until the peer's request is queued, closes it unread."""
    ls.settimeout(timeout)
    conn, _ = ls.accept()
    conn.settimeout(timeout)
    select.select([conn], [], [], timeout)
    closer(conn)


# ---- the children ----

def _recv_after_unread_close(rep, address, kind):
    """Connects, sends a request the server never reads; the server closes: recv gets ECONNRESET, then EOF."""
    with socket.socket(socket.AF_UNIX, kind) as s:
        s.settimeout(5.0)
        rep.call("connect", s.connect, address)
        rep.call("send", s.send, b"GET / HTTP/1.0\r\n\r\n", socket.MSG_NOSIGNAL)
        got = rep.call("recv", s.recv, 1024)
        if got is not None:
            rep.put(eof=got == b"")
        rep.call("recv", s.recv, 1024)


def reset_on_recv(comm_prefix, address, kind=socket.SOCK_STREAM):
    """The client's recv() on a connection the server closed with the request unread."""
    with listener(address, kind) as ls:
        pid = os.fork()
        if pid == 0:  # the server: closes at once, whatever the client sent
            code = 0
            try:
                accept_unread(ls, lambda c: c.close())
            except BaseException:
                code = 1
            os._exit(code)
        try:
            return run_as(comm_prefix, "cli", _recv_after_unread_close, address, kind)
        finally:
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the server child failed"


def _pair_reset(rep, kind):
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    with a:
        a.settimeout(5.0)
        rep.call("send", a.send, b"unread", socket.MSG_NOSIGNAL)
        b.close()  # with "unread" in its queue: a gets ECONNRESET
        rep.call("recv", a.recv, 1024)
        rep.call("send", a.send, b"x", socket.MSG_NOSIGNAL)


def socketpair_reset(comm_prefix, kind=socket.SOCK_STREAM):
    """A socketpair whose one end closes with data unread: recv then send on the other, unnamed both."""
    return run_as(comm_prefix, "cli", _pair_reset, kind)


def _send_after_close(rep, address, kind, closed_fd, sends, flags):
    with socket.socket(socket.AF_UNIX, kind) as s:
        s.settimeout(5.0)
        rep.call("connect", s.connect, address)
        os.read(closed_fd, 1)  # the server closed (nothing unread): sends get EPIPE
        for _ in range(sends):
            rep.call("send", s.send, b"x" * 16, flags)


def epipe(comm_prefix, address, kind=socket.SOCK_STREAM, sends=2, flags=socket.MSG_NOSIGNAL, sigpipe=signal.SIG_IGN):
    """sends send()s on a connection the server closed; without MSG_NOSIGNAL each raises SIGPIPE (SIG_DFL:
    the first one kills the client)."""
    closed_r, closed_w = os.pipe()
    with listener(address, kind) as ls:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ls.settimeout(5.0)
                conn, _ = ls.accept()
                conn.close()
                os.write(closed_w, b"c")
            except BaseException:
                code = 1
            os._exit(code)
        os.close(closed_w)
        try:
            return run_as(comm_prefix, "cli", _send_after_close, address, kind, closed_r, sends, flags,
                          sigpipe=sigpipe, allow_signal=signal.SIGPIPE if sigpipe == signal.SIG_DFL else None)
        finally:
            os.close(closed_r)
            os.waitpid(pid, 0)


def _connects(rep, addresses, blocking=True, hold=True):
    for address in addresses:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(blocking)
        rep.call("connect", s.connect, address)
        if hold:
            rep.sockets = getattr(rep, "sockets", []) + [s]  # held open: they fill the backlog
        else:
            s.close()


def connects(comm_prefix, addresses, blocking=True, hold=True, limit=DEADLINE):
    """connect() to each address (str paths, or bytes with a leading NUL for abstract names); hold: keep each
    socket open until the end (a full backlog), else close it at once (thousands within the fd limit)."""
    return run_as(comm_prefix, "cli", _connects, addresses, blocking, hold, limit=limit)


class ClosingUpstream(ThreadServer):
    """A unix-socket upstream in a thread: accepts `count` connections, reads the first bytes of each request
    (at most 16) and closes with the rest unread, so the proxy's next recv() fails with ECONNRESET (php-fpm
    killed mid-request does this to nginx). `handled`: the connections it closed so."""

    def __init__(self, path, count):
        super().__init__(listener(path, backlog=16), count)

    def handle(self, conn):
        conn.recv(16)
        time.sleep(0.05)  # the rest of the request is queued: the close then resets
        conn.close()
