"""Real socket-error generators for the BPF integration tests.

Every scenario runs its actors ("roles") in forked child processes.  Each child
first names itself with prctl(PR_SET_NAME) -- before it creates any socket --
so the kernel attributes its sockets to a distinctive comm
f"{comm_prefix}_{role}"[:15], then performs real socket system calls and
streams what each call returned back to the parent over a pipe (one JSON
object per line).  The parent waits for every child with a deadline, kills
what is left when it expires, and returns a result dict.

Traffic goes to loopback only (127.0.0.1 / ::1), or stays inside a network
namespace the scenario creates and deletes itself (``timeout``).  Every wait
and every loop is bounded.  Needs root only for ``timeout`` (netns, nft).

Common keys of every result:

  scenario   name of the scenario function
  family     socket.AF_INET or socket.AF_INET6 (an int)
  port       the service port: the server's listening port (for ``refused``
             the port nobody listens on)
  remote     the peer address as the client sees it ("127.0.0.1" / "::1")
  comms      role -> comm the child actually has (read back from /proc)
  errnos     role -> errno names the child's socket syscalls returned, in
             order (only failures; ``reset_on_recv`` also records the
             recv() that returned 0 after the reset as "EOF")
  calls      role -> [[op, outcome], ...] every socket call with its outcome
             ("OK", "EOF" for a recv that returned 0, or an errno name)
  info       role -> extra facts a child reported (e.g. "local_port")
  pids       role -> pid of the child
  exits      role -> {"code": exit code or None, "signal": signal or None}
  duration   seconds the scenario took

A child that raised an unexpected exception, or that had to be killed after
the deadline, makes the scenario raise ScenarioError (the sigpipe "killed"
child dying of SIGPIPE is expected and does not).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
import traceback

__all__ = [
    "ScenarioError",
    "reset_on_send",
    "reset_on_recv",
    "epipe_after_fin",
    "refused",
    "sigpipe",
    "timeout",
    "healthy",
    "fin_close",
    "make_comm",
]

PR_SET_NAME = 15
CLONE_NEWNET = 0x40000000
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)

# per-call bound inside the children (SO_RCVTIMEO / SO_SNDTIMEO, event waits)
CALL_TIMEOUT = 5.0
# bound of a whole scenario as seen by the parent
SCENARIO_TIMEOUT = 15.0

_libc = ctypes.CDLL(None, use_errno=True)


class ScenarioError(RuntimeError):
    """A scenario could not run as designed (child crashed or hung)."""


# Set ERRNOMON_TEST_TAG (one or two characters) to keep the comms of two test runs on one host apart:
# every daemon counts the whole host, so two runs of the same test would otherwise count each other.
RUN_TAG = os.environ.get("ERRNOMON_TEST_TAG", "")[:2]


def make_comm(comm_prefix: str, role: str) -> str:
    """The comm a scenario gives the child playing ``role``."""
    return f"{RUN_TAG}{comm_prefix}_{role}"[:15]


def _loopback(family: int) -> str:
    if family == socket.AF_INET:
        return "127.0.0.1"
    if family == socket.AF_INET6:
        return "::1"
    raise ValueError(f"unsupported family {family!r}")


def _errname(num: int | None) -> str:
    if num is None:
        return "UNKNOWN"
    return errno.errorcode.get(num, f"E{num}")


# --------------------------------------------------------------------------
# child side


def _set_comm(comm: str) -> None:
    name = comm.encode()[:15]
    if _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NAME): {os.strerror(err)}")


def _setns(netns: str) -> None:
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _bound(sock: socket.socket, seconds: float = CALL_TIMEOUT) -> None:
    """Kernel-side timeouts: calls stay truly blocking syscalls but cannot hang."""
    sec = int(seconds)
    tv = struct.pack("ll", sec, int((seconds - sec) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _linger0(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


FAILED = object()  # what _Reporter.call returns for a failed call


class _Reporter:
    """Child-side recorder; every record goes to the parent at once."""

    def __init__(self, fd: int):
        self.fd = fd

    def _emit(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def set(self, key: str, value) -> None:
        self._emit({"k": "set", "key": key, "val": value})

    def record(self, op: str, outcome: str, as_errno: bool) -> None:
        self._emit({"k": "call", "op": op, "res": outcome, "errno": as_errno})

    def call(self, op: str, fn, *args, eof_is_errno: bool = False):
        """Run one socket call; record "OK", "EOF" or the errno name.

        Returns the call's result, or FAILED if it raised OSError.
        """
        try:
            res = fn(*args)
        except OSError as e:
            self.record(op, _errname(e.errno), True)
            return FAILED
        if op.startswith("recv") and res == b"":
            self.record(op, "EOF", eof_is_errno)
        else:
            self.record(op, "OK", False)
        return res


class _Event:
    """One-shot signal between processes (a pipe created before forking)."""

    def __init__(self):
        self.r, self.w = os.pipe()

    def set(self) -> None:
        os.write(self.w, b"x")

    def wait(self, timeout: float = CALL_TIMEOUT) -> bool:
        ready, _, _ = select.select([self.r], [], [], timeout)
        if ready:
            os.read(self.r, 1)
            return True
        return False

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def _wait_event(ev: _Event, what: str, timeout: float = CALL_TIMEOUT) -> None:
    if not ev.wait(timeout):
        raise TimeoutError(f"timed out waiting for {what}")


def _poll_hup(rep: _Reporter, sock: socket.socket, timeout: float = 2.0) -> None:
    """Wait (bounded) until the peer's RST/FIN has been processed."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLHUP | select.POLLERR | select.POLLRDHUP)
    events = p.poll(int(timeout * 1000))
    rep.set("poll_events", events[0][1] if events else 0)


# --------------------------------------------------------------------------
# parent side


class _Proc:
    def __init__(self, role: str, comm: str, pid: int, fd: int):
        self.role = role
        self.comm_wanted = comm
        self.pid = pid
        self.fd = fd
        self.buf = b""
        self.eof = False
        self.calls: list[list[str]] = []
        self.errnos: list[str] = []
        self.info: dict = {}
        self.error: str | None = None
        self.done = False
        self.status: int | None = None
        self.killed = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            msg = json.loads(line)
            kind = msg["k"]
            if kind == "call":
                self.calls.append([msg["op"], msg["res"]])
                if msg["errno"]:
                    self.errnos.append(msg["res"])
            elif kind == "set":
                self.info[msg["key"]] = msg["val"]
            elif kind == "done":
                self.done = True
            elif kind == "error":
                self.error = msg["tb"]

    def read_some(self) -> None:
        data = os.read(self.fd, 65536)
        if data:
            self.feed(data)
        else:
            self.eof = True
            os.close(self.fd)


def _spawn(role: str, comm_prefix: str, fn, *args, netns: str | None = None,
           sigpipe=signal.SIG_IGN) -> _Proc:
    comm = make_comm(comm_prefix, role)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller
        code = 0
        try:
            os.close(r)
            rep = _Reporter(w)
            try:
                signal.signal(signal.SIGPIPE, sigpipe)
                if netns:
                    _setns(netns)
                _set_comm(comm)
                with open("/proc/self/comm") as f:
                    rep.set("comm", f.read().strip())
                fn(rep, *args)
                rep._emit({"k": "done"})
            except BaseException:
                code = 1
                rep._emit({"k": "error", "tb": traceback.format_exc()})
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    os.close(w)
    return _Proc(role, comm, pid, r)


def _wait_info(proc: _Proc, key: str, deadline: float):
    """Read the child's reports until it has told us ``key``."""
    while key not in proc.info:
        if proc.error:
            raise ScenarioError(f"{proc.role} failed:\n{proc.error}")
        if proc.eof:
            raise ScenarioError(f"{proc.role} exited before reporting {key!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ScenarioError(f"timed out waiting for {proc.role} to report {key!r}")
        ready, _, _ = select.select([proc.fd], [], [], remaining)
        if ready:
            proc.read_some()
    return proc.info[key]


def _reap(proc: _Proc, block: bool) -> bool:
    if proc.status is not None:
        return True
    try:
        pid, status = os.waitpid(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        proc.status = -1
        return True
    if pid == 0:
        return False
    proc.status = status
    return True


def _finish(procs: list[_Proc], deadline: float) -> None:
    """Drain every child's reports and reap it; kill what outlives ``deadline``."""
    while True:
        open_fds = {p.fd: p for p in procs if not p.eof}
        if not open_fds:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select(list(open_fds), [], [], min(remaining, 0.5))
        for fd in ready:
            open_fds[fd].read_some()
    while time.monotonic() < deadline and not all(_reap(p, False) for p in procs):
        time.sleep(0.01)
    for p in procs:
        if p.status is None:
            _kill(p)
        if not p.eof:
            try:  # whatever is still buffered in the pipe
                while select.select([p.fd], [], [], 0)[0]:
                    p.read_some()
                    if p.eof:
                        break
            except OSError:
                pass
            if not p.eof:
                os.close(p.fd)
                p.eof = True


def _kill(p: _Proc) -> None:
    p.killed = True
    try:
        os.kill(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    end = time.monotonic() + 5
    while not _reap(p, False) and time.monotonic() < end:
        time.sleep(0.01)


def _abort(procs: list[_Proc]) -> None:
    for p in procs:
        if p.status is None:
            _kill(p)
        if not p.eof:
            try:
                os.close(p.fd)
            except OSError:
                pass
            p.eof = True


def _exit_of(status: int | None) -> dict:
    if status is None or status < 0:
        return {"code": None, "signal": None}
    if os.WIFSIGNALED(status):
        return {"code": None, "signal": os.WTERMSIG(status)}
    return {"code": os.WEXITSTATUS(status), "signal": None}


def _result(name: str, family: int, port: int, remote: str, procs: list[_Proc],
            started: float, allow_signal: dict | None = None, **extra) -> dict:
    allow_signal = allow_signal or {}
    problems = []
    for p in procs:
        ex = _exit_of(p.status)
        if p.killed:
            problems.append(f"{p.role} ({p.comm_wanted}) hung and was killed")
        elif p.error:
            problems.append(f"{p.role} ({p.comm_wanted}) failed:\n{p.error}")
        elif ex["signal"] is not None and ex["signal"] != allow_signal.get(p.role):
            problems.append(f"{p.role} died of signal {ex['signal']}")
        elif ex["signal"] is None and not p.done:
            problems.append(f"{p.role} exited ({ex}) without finishing")
    if problems:
        calls = {p.role: p.calls for p in procs}
        raise ScenarioError(f"{name}: " + "; ".join(problems) + f"\ncalls so far: {calls}")
    res = {
        "scenario": name,
        "family": int(family),
        "port": port,
        "remote": remote,
        "comms": {p.role: p.info.get("comm") for p in procs},
        "errnos": {p.role: p.errnos for p in procs},
        "calls": {p.role: p.calls for p in procs},
        "info": {p.role: {k: v for k, v in p.info.items() if k != "comm"} for p in procs},
        "pids": {p.role: p.pid for p in procs},
        "exits": {p.role: _exit_of(p.status) for p in procs},
        "duration": round(time.monotonic() - started, 3),
    }
    res.update(extra)
    return res


def _listener(rep: _Reporter, family: int, backlog: int = 16) -> socket.socket:
    ls = socket.socket(family, socket.SOCK_STREAM)
    _bound(ls)
    ls.bind((_loopback(family), 0))
    ls.listen(backlog)
    rep.set("port", ls.getsockname()[1])
    return ls


# --------------------------------------------------------------------------
# actors


def _srv_rst(rep: _Reporter, family: int, ready: _Event | None = None) -> None:
    ls = _listener(rep, family)
    res = rep.call("accept", ls.accept)
    if res is FAILED:
        return
    conn, _ = res
    if ready is not None:  # the client's connect() has returned (and it may be blocked in recv() next)
        _wait_event(ready, "client connected")
        time.sleep(0.1)
    _linger0(conn)
    conn.close()
    ls.close()


def _cli_send_after_rst(rep: _Reporter, family: int, port: int, flags: int, connected: _Event) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s)
    rep.call("connect", s.connect, (_loopback(family), port))
    rep.set("local_port", s.getsockname()[1])
    connected.set()
    _poll_hup(rep, s)
    rep.call("send", s.send, b"x" * 16, flags)
    rep.call("send", s.send, b"x" * 16, flags)
    s.close()


def _cli_recv_rst(rep: _Reporter, family: int, port: int, ready: _Event) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s)
    rep.call("connect", s.connect, (_loopback(family), port))
    rep.set("local_port", s.getsockname()[1])
    ready.set()
    rep.call("recv", s.recv, 1024, eof_is_errno=True)
    rep.call("recv", s.recv, 1024, eof_is_errno=True)
    s.close()


# --------------------------------------------------------------------------
# scenarios


def _two_actors(name, comm_prefix, family, srv_fn, srv_args, cli_fn, cli_args,
                cli_kwargs=None, allow_signal=None, events=(), **extra) -> dict:
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    procs: list[_Proc] = []
    try:
        srv = _spawn("srv", comm_prefix, srv_fn, family, *srv_args)
        procs.append(srv)
        port = _wait_info(srv, "port", deadline)
        cli = _spawn("cli", comm_prefix, cli_fn, family, port, *cli_args, **(cli_kwargs or {}))
        procs.append(cli)
        _finish(procs, deadline)
    except BaseException:
        _abort(procs)
        raise
    finally:
        for ev in events:
            ev.close()
    return _result(name, family, port, _loopback(family), procs, started,
                   allow_signal=allow_signal, **extra)


def reset_on_send(comm_prefix: str, family: int = socket.AF_INET) -> dict:
    """Server RSTs the connection (linger-0 close); client then sends twice.

    Expected: errnos {"srv": [], "cli": ["ECONNRESET", "EPIPE"]}. The server resets only once the
    client's connect() has returned: on a slow machine (an emulated guest) an earlier RST makes connect()
    itself fail with ECONNRESET.
    """
    connected = _Event()
    return _two_actors("reset_on_send", comm_prefix, family, _srv_rst, (connected,),
                       _cli_send_after_rst, (socket.MSG_NOSIGNAL, connected), events=(connected,))


def reset_on_recv(comm_prefix: str, family: int = socket.AF_INET) -> dict:
    """Client is blocked in recv() when the server's linger-0 close RSTs.

    Expected: errnos {"srv": [], "cli": ["ECONNRESET", "EOF"]}.
    """
    ready = _Event()
    return _two_actors("reset_on_recv", comm_prefix, family,
                       _srv_rst, (ready,), _cli_recv_rst, (ready,), events=(ready,))


def _srv_fin(rep: _Reporter, family: int) -> None:
    ls = _listener(rep, family)
    res = rep.call("accept", ls.accept)
    if res is FAILED:
        return
    conn, _ = res
    conn.close()  # orderly: FIN
    ls.close()


def _cli_epipe_after_fin(rep: _Reporter, family: int, port: int) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s)
    rep.call("connect", s.connect, (_loopback(family), port))
    rep.set("local_port", s.getsockname()[1])
    rep.call("recv", s.recv, 1024)  # waits for the FIN: "EOF", now CLOSE_WAIT
    # accepted by our kernel; the peer's closed socket answers with RST
    rep.call("send", s.send, b"x", socket.MSG_NOSIGNAL)
    _poll_hup(rep, s, 1.0)  # RST in CLOSE_WAIT sets sk_err = EPIPE -> POLLERR
    rep.call("send", s.send, b"x", socket.MSG_NOSIGNAL)
    s.close()


def epipe_after_fin(comm_prefix: str) -> dict:
    """Server closes normally (FIN); client sends into CLOSE_WAIT, gets RST, sends again.

    Expected: errnos {"srv": [], "cli": ["EPIPE"]};
    calls cli: connect OK, recv EOF, send OK, send EPIPE.
    """
    return _two_actors("epipe_after_fin", comm_prefix, socket.AF_INET,
                       _srv_fin, (), _cli_epipe_after_fin, ())


def _cli_refused(rep: _Reporter, family: int) -> None:
    host = _loopback(family)
    probe = socket.socket(family, socket.SOCK_STREAM)  # bound, never listening
    probe.bind((host, 0))
    port = probe.getsockname()[1]
    probe.close()
    rep.set("port", port)
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s)
    rep.call("connect", s.connect, (host, port))
    s.close()


def refused(comm_prefix: str, family: int = socket.AF_INET) -> dict:
    """Blocking connect() to a loopback port nobody listens on.

    Expected: errnos {"cli": ["ECONNREFUSED"]}; port is the refused port.
    """
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    procs: list[_Proc] = []
    try:
        cli = _spawn("cli", comm_prefix, _cli_refused, family)
        procs.append(cli)
        _finish(procs, deadline)
    except BaseException:
        _abort(procs)
        raise
    return _result("refused", family, cli.info.get("port"), _loopback(family), procs, started)


def _handled_sigpipe(signum, frame) -> None:
    global _sigpipes_handled
    _sigpipes_handled += 1


_sigpipes_handled = 0


def _cli_sigpipe(rep: _Reporter, family: int, port: int, action: str, connected: _Event) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s)
    rep.call("connect", s.connect, (_loopback(family), port))
    rep.set("local_port", s.getsockname()[1])
    connected.set()
    _poll_hup(rep, s)
    rep.call("send", s.send, b"x" * 16)  # ECONNRESET (sk_err), no signal
    if action == "killed":
        rep.set("fatal_send", True)  # reported before the send that kills us
    rep.call("send", s.send, b"x" * 16)  # EPIPE + SIGPIPE
    if action == "handled":
        end = time.monotonic() + 1.0
        while _sigpipes_handled == 0 and time.monotonic() < end:
            time.sleep(0.005)  # the Python-level handler runs between bytecodes
        rep.set("sigpipes_handled", _sigpipes_handled)
    s.close()


_SIGPIPE_DISPOSITION = {
    "killed": signal.SIG_DFL,
    "ignored": signal.SIG_IGN,
    "handled": _handled_sigpipe,
}


def sigpipe(comm_prefix: str, action: str) -> dict:
    """Client with SIGPIPE SIG_DFL / SIG_IGN / a handler sends on a reset socket.

    send() without MSG_NOSIGNAL: the first returns ECONNRESET, the second
    EPIPE and raises SIGPIPE.  Expected errnos of "cli": ["ECONNRESET"] for
    "killed" (the second send never returns; exit_signal == 13), otherwise
    ["ECONNRESET", "EPIPE"].  Extra keys: action, exit_signal (signal that
    ended the client or None), sigpipes_handled ("handled" only).
    """
    if action not in _SIGPIPE_DISPOSITION:
        raise ValueError(f"action must be one of {sorted(_SIGPIPE_DISPOSITION)}")
    connected = _Event()  # as in reset_on_send: no RST before connect() has returned
    res = _two_actors("sigpipe", comm_prefix, socket.AF_INET, _srv_rst, (connected,),
                      _cli_sigpipe, (action, connected), events=(connected,),
                      cli_kwargs={"sigpipe": _SIGPIPE_DISPOSITION[action]},
                      allow_signal={"cli": signal.SIGPIPE} if action == "killed" else None,
                      action=action)
    res["exit_signal"] = res["exits"]["cli"]["signal"]
    if action == "handled":
        res["sigpipes_handled"] = res["info"]["cli"].get("sigpipes_handled", 0)
    return res


def _run(cmd: list[str], stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, timeout=10,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


_netns_seq = 0


def _srv_hold(rep: _Reporter, family: int, release: _Event) -> None:
    ls = _listener(rep, family)
    res = rep.call("accept", ls.accept)
    if res is FAILED:
        return
    conn, _ = res
    _wait_event(release, "release", SCENARIO_TIMEOUT)
    _linger0(conn)  # leave no orphan retransmitting a FIN into the dying netns
    conn.close()
    ls.close()


def _cli_timeout(rep: _Reporter, family: int, port: int, connected: _Event, go: _Event,
                 user_timeout_ms: int) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s, 8.0)
    rep.call("connect", s.connect, (_loopback(family), port))
    rep.set("local_port", s.getsockname()[1])
    s.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, user_timeout_ms)
    connected.set()
    _wait_event(go, "drop rule")
    rep.call("send", s.send, b"x" * 64, socket.MSG_NOSIGNAL)
    t0 = time.monotonic()
    rep.call("recv", s.recv, 1024)  # blocks until the user timeout kills it
    rep.set("recv_seconds", round(time.monotonic() - t0, 3))
    s.close()


def timeout(comm_prefix: str, user_timeout_ms: int = 1000) -> dict:
    """TCP_USER_TIMEOUT expiry inside a private network namespace.

    Server and client run inside a fresh netns (joined with setns() before any
    socket exists); after the handshake an nftables rule in that netns drops
    every TCP packet to the server port; the client sends and blocks in
    recv(), which fails with ETIMEDOUT.  The namespace is always deleted.

    Expected: errnos {"srv": [], "cli": ["ETIMEDOUT"]}.  Extra key: netns.
    """
    global _netns_seq
    _netns_seq += 1
    netns = f"errnomon-{os.getpid()}-{_netns_seq}"
    family = socket.AF_INET
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    procs: list[_Proc] = []
    connected, go, release = _Event(), _Event(), _Event()
    created = False
    try:
        _run(["ip", "netns", "add", netns])
        created = True
        _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        srv = _spawn("srv", comm_prefix, _srv_hold, family, release, netns=netns)
        procs.append(srv)
        port = _wait_info(srv, "port", deadline)
        cli = _spawn("cli", comm_prefix, _cli_timeout, family, port, connected, go,
                     user_timeout_ms, netns=netns)
        procs.append(cli)
        if not connected.wait(max(0.0, min(CALL_TIMEOUT, deadline - time.monotonic()))):
            _finish(procs, time.monotonic())  # collect what they said, kill them
            return _result("timeout", family, port, "127.0.0.1", procs, started, netns=netns)
        ruleset = (
            "table inet errnomon_t {\n"
            "  chain errnomon_out {\n"  # not "out": a keyword to nft 0.9 (Debian 11)
            "    type filter hook output priority 0; policy accept;\n"
            f"    tcp dport {port} drop\n"
            "  }\n"
            "}\n"
        )
        _run(["ip", "netns", "exec", netns, "nft", "-f", "-"], stdin=ruleset)
        go.set()
        _finish([cli], deadline)
        release.set()
        _finish(procs, deadline)
    except BaseException:
        _abort(procs)
        raise
    finally:
        for ev in (connected, go, release):
            ev.close()
        if created:
            subprocess.run(["ip", "netns", "del", netns], timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _result("timeout", family, port, "127.0.0.1", procs, started, netns=netns)


def _srv_echo(rep: _Reporter, family: int, n: int) -> None:
    ls = _listener(rep, family, backlog=max(16, n))
    served = 0
    for _ in range(n):
        res = rep.call("accept", ls.accept)
        if res is FAILED:
            break
        conn, _ = res
        _bound(conn)
        data = b""
        for _ in range(64):  # bounded: at most 64 reads for 64 bytes
            chunk = rep.call("recv", conn.recv, 64 - len(data))
            if chunk is FAILED or not chunk:
                break
            data += chunk
            if len(data) >= 64:
                break
        rep.call("sendall", conn.sendall, data)
        rep.call("recv", conn.recv, 64)  # "EOF": the client closed first
        conn.close()  # FIN from CLOSE_WAIT
        served += 1
    rep.set("served", served)
    ls.close()


def _cli_echo(rep: _Reporter, family: int, port: int, n: int) -> None:
    done = 0
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        _bound(s)
        if rep.call("connect", s.connect, (_loopback(family), port)) is FAILED:
            s.close()
            continue
        payload = os.urandom(64)
        rep.call("sendall", s.sendall, payload)
        got = b""
        for _ in range(64):
            chunk = rep.call("recv", s.recv, 64 - len(got))
            if chunk is FAILED or not chunk:
                break
            got += chunk
            if len(got) >= 64:
                break
        s.close()  # client closes first
        if got == payload:
            done += 1
    rep.set("completed", done)


def healthy(comm_prefix: str, n: int = 20) -> dict:
    """n echo connections: connect, 64 bytes each way, client closes first.

    Expected: no errnos at all.  Extra keys: connections (n), completed
    (echoes the client verified), served (connections the server finished).
    """
    n = max(1, min(int(n), 1000))
    res = _two_actors("healthy", comm_prefix, socket.AF_INET,
                      _srv_echo, (n,), _cli_echo, (n,), connections=n)
    res["completed"] = res["info"]["cli"].get("completed", 0)
    res["served"] = res["info"]["srv"].get("served", 0)
    return res


def _srv_fin_close(rep: _Reporter, family: int, accepted: _Event) -> None:
    ls = _listener(rep, family)
    res = rep.call("accept", ls.accept)
    if res is FAILED:
        return
    conn, _ = res
    _bound(conn)
    accepted.set()
    rep.call("recv", conn.recv, 64)  # "EOF": the client's FIN, we are in CLOSE_WAIT
    conn.close()  # our FIN: CLOSE_WAIT -> LAST_ACK
    ls.close()


def _cli_fin_close(rep: _Reporter, family: int, port: int, accepted: _Event) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    _bound(s)
    rep.call("connect", s.connect, (_loopback(family), port))
    rep.set("local_port", s.getsockname()[1])
    _wait_event(accepted, "accept")
    s.close()  # client closes first: FIN


def fin_close(comm_prefix: str) -> dict:
    """One connection closed in order: client FIN first, then the server's FIN.

    Expected: no errnos; calls srv: accept OK, recv EOF; cli: connect OK.
    """
    accepted = _Event()
    return _two_actors("fin_close", comm_prefix, socket.AF_INET,
                       _srv_fin_close, (accepted,), _cli_fin_close, (accepted,),
                       events=(accepted,))
