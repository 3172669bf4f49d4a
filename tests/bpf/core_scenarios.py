"""Socket-error generators for connect failures, resets sent and nested tracing load.

Built on tests/bpf/scenarios.py (forked children with distinctive comms reporting every call over a pipe).
Each generator's own view (connect()'s errno, getsockopt(SO_ERROR) after poll, the recv that saw the reset)
is the ground truth the tests compare errnomon with. Network namespaces and their nftables rules are named
after the test tag and deleted at the end.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import subprocess
import time

from . import scenarios as sc

TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
TCP_SYN_SENT = 2  # include/net/tcp_states.h
_seq = 0


class Netns:
    """A fresh network namespace with loopback up, and optionally an nftables output rule."""

    def __init__(self, rule: str | None = None):
        global _seq
        _seq += 1
        self.name = f"{sc.RUN_TAG}errnomon-core-{os.getpid()}-{_seq}"
        self.rule = rule

    def __enter__(self):
        sc._run(["ip", "netns", "add", self.name])
        try:
            sc._run(["ip", "-n", self.name, "link", "set", "lo", "up"])
            if self.rule:
                self.add_rule(self.rule)
        except BaseException:
            self.__exit__()
            raise
        return self

    def add_rule(self, rule: str) -> None:
        ruleset = ("table inet errnomon_core {\n  chain errnomon_out {\n    type filter hook output priority 0; "
                   "policy accept;\n    %s\n  }\n}\n" % rule)
        sc._run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], stdin=ruleset)

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], timeout=10, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def _start_attempts(rep, family: int, port: int, n: int, socks: list, syncnt: int | None = None,
                    spread: float = 0.0) -> None:
    """n non-blocking connects to (loopback, port), `spread` seconds apart, each appended to `socks` as soon as
    it exists (the caller closes them); each connect() is recorded (EINPROGRESS expected)."""
    host = sc._loopback(family)
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        socks.append(s)
        if syncnt:
            s.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, syncnt)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        rep.record("connect", sc._errname(err), err not in (0, errno.EINPROGRESS))
        time.sleep(spread)


def _tcp_state(s: socket.socket) -> int:
    """The socket's TCP state (tcpi_state, the first byte of TCP_INFO)."""
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _connect_all(rep, family: int, port: int, n: int, blocking: bool, syncnt: int | None, wait: float,
                 spread: float = 0.0, cpu: int | None = None) -> None:
    """n connection attempts to (loopback, port), `spread` seconds apart, on one CPU if given. Blocking:
    connect()'s errno is recorded. Non-blocking: connect() must say EINPROGRESS; then poll() for the outcome
    and record getsockopt(SO_ERROR) as "so_error" - what an event loop reads."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    socks = []
    if blocking:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            if syncnt:
                s.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, syncnt)
            sc._bound(s, wait)
            rep.call("connect", s.connect, (sc._loopback(family), port))
            s.close()
    else:
        _start_attempts(rep, family, port, n, socks, syncnt, spread)
    _await_outcomes(rep, socks, select.POLLOUT | select.POLLERR, wait)


def _await_outcomes(rep, socks, events: int, wait: float) -> None:
    """poll() each socket for `events`, then record its SO_ERROR ("so_error"); close them all."""
    p = select.poll()
    for s in socks:
        p.register(s.fileno(), events)
    pending = {s.fileno(): s for s in socks}
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        for fd, _ in p.poll(200):
            s = pending.pop(fd, None)
            if s is not None:
                p.unregister(fd)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                rep.record("so_error", sc._errname(err) if err else "OK", bool(err))
    for s in socks:
        s.close()
    rep.set("unfinished", len(pending))


def _cli_refused(rep, family: int, n: int, blocking: bool) -> None:
    probe = socket.socket(family, socket.SOCK_STREAM)  # bound, never listening
    probe.bind((sc._loopback(family), 0))
    port = probe.getsockname()[1]
    probe.close()
    rep.set("port", port)
    _connect_all(rep, family, port, n, blocking, None, sc.CALL_TIMEOUT)


def refused(comm_prefix: str, family: int, n: int, blocking: bool) -> dict:
    """n connects to one loopback port nobody listens on: ECONNREFUSED n times, blocking or not."""
    started = time.monotonic()
    procs = []
    try:
        procs.append(sc._spawn("cli", comm_prefix, _cli_refused, family, n, blocking))
        sc._finish(procs, started + sc.SCENARIO_TIMEOUT)
    except BaseException:
        sc._abort(procs)
        raise
    return sc._result("refused", family, procs[0].info.get("port"), sc._loopback(family), procs, started)


TIMEOUT_PORT = 19250  # inside a private namespace: nothing else uses it there


def timed_out(comm_prefix: str, family: int, n: int, blocking: bool) -> dict:
    """n connects whose SYNs nftables drops, with TCP_SYNCNT 1 on the socket (no sysctl touched): the kernel
    gives up after the SYN and one retry (about 3 s): ETIMEDOUT n times."""
    started = time.monotonic()
    procs = []
    with Netns("tcp dport %d drop" % TIMEOUT_PORT) as ns:
        try:
            procs.append(sc._spawn("cli", comm_prefix, _connect_all, family, TIMEOUT_PORT, n, blocking, 1, 12.0,
                                   netns=ns.name))
            sc._finish(procs, started + 30)
        except BaseException:
            sc._abort(procs)
            raise
    return sc._result("timed_out", family, TIMEOUT_PORT, sc._loopback(family), procs, started)


def _srv_abort_targets(rep, family: int, n: int, clients_gone: sc._Event) -> None:
    """Accept n connections; once the clients are gone (their resets dropped on the way), send one byte on
    each: the client kernel answers with a reset for no socket; recv then records ECONNRESET."""
    ls = sc._listener(rep, family)
    conns = []
    for _ in range(n):
        conn, _ = ls.accept()
        sc._bound(conn)
        conns.append(conn)
    rep.set("accepted", len(conns))
    sc._wait_event(clients_gone, "clients gone")
    for conn in conns:
        rep.call("send", conn.send, b"x", socket.MSG_NOSIGNAL)
    for conn in conns:
        sc._poll_hup(rep, conn)
        rep.call("recv", conn.recv, 16)
        conn.close()
    ls.close()


def _cli_abort(rep, family: int, port: int, n: int, clients_gone: sc._Event) -> None:
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        sc._bound(s)
        rep.call("connect", s.connect, (sc._loopback(family), port))
        socks.append(s)
    rep.set("local_ports", sorted(s.getsockname()[1] for s in socks))
    for s in socks:
        sc._linger0(s)  # an RST|ACK: nftables drops it, so the server never hears of it
        s.close()
    clients_gone.set()


def aborting_clients(comm_prefix: str, family: int, n: int) -> dict:
    """n clients (n distinct ephemeral ports) abort; the server's next segment to each draws a reset for no
    socket from the client's kernel. Expected: srv errnos ECONNRESET n times."""
    started = time.monotonic()
    deadline = started + sc.SCENARIO_TIMEOUT
    procs = []
    gone = sc._Event()
    try:
        with Netns() as ns:
            try:
                srv = sc._spawn("srv", comm_prefix, _srv_abort_targets, family, n, gone, netns=ns.name)
                procs.append(srv)
                port = sc._wait_info(srv, "port", deadline)
                # the clients' own aborts (RST|ACK) must not reach the server; the kernel's answers (RST) must
                ns.add_rule("tcp dport %d tcp flags & (rst | ack) == (rst | ack) drop" % port)
                procs.append(sc._spawn("cli", comm_prefix, _cli_abort, family, port, n, gone, netns=ns.name))
                sc._finish(procs, deadline)
            except BaseException:
                sc._abort(procs)
                raise
    finally:
        gone.close()
    return sc._result("aborting_clients", family, port, sc._loopback(family), procs, started)



def _srv_forget(rep, family: int, n: int, accepted: sc._Event, done: sc._Event) -> None:
    """Accept n connections and abort them with linger 0 (nftables drops those resets), keeping the
    listener: the clients' next segments reach the listener, which answers each with a reset."""
    ls = sc._listener(rep, family, backlog=max(16, n))
    conns = [ls.accept()[0] for _ in range(n)]
    for conn in conns:
        sc._linger0(conn)
        conn.close()
    accepted.set()
    sc._wait_event(done, "clients done", 30)
    ls.close()


def _cli_keepalive(rep, family: int, port: int, n: int, accepted: sc._Event) -> None:
    """n idle connections probed by 1 s keepalive; SO_ERROR of each once it reports an error."""
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sc._bound(s)
        rep.call("connect", s.connect, (sc._loopback(family), port))
        socks.append(s)
    sc._wait_event(accepted, "server forgot", 10)
    _await_outcomes(rep, socks, select.POLLERR | select.POLLHUP, 15.0)


def listener_forgot(comm_prefix: str, family: int, n: int) -> dict:
    """A server forgets n connections (its linger-0 resets are dropped) but keeps listening: each client's
    keepalive probe is answered by the listener with a reset. Expected: cli so_error ECONNRESET n times."""
    started = time.monotonic()
    deadline = started + 30
    procs = []
    accepted, done = sc._Event(), sc._Event()
    try:
        with Netns() as ns:
            try:
                srv = sc._spawn("srv", comm_prefix, _srv_forget, family, n, accepted, done, netns=ns.name)
                procs.append(srv)
                port = sc._wait_info(srv, "port", deadline)
                ns.add_rule("tcp sport %d tcp flags & (rst | ack) == (rst | ack) drop" % port)
                cli = sc._spawn("cli", comm_prefix, _cli_keepalive, family, port, n, accepted, netns=ns.name)
                procs.append(cli)
                sc._finish([cli], deadline)
                done.set()
                sc._finish(procs, deadline)
            except BaseException:
                sc._abort(procs)
                raise
    finally:
        accepted.close()
        done.close()
    return sc._result("listener_forgot", family, port, sc._loopback(family), procs, started)


def syn_timeouts(comm_prefix: str, family: int, n: int, spread: float = 0.05, cpus=(0, 1)) -> dict:
    """n connection attempts per CPU whose SYNs nftables drops in a private netns (TCP_SYNCNT 1): each ends
    in the retransmission timer (timer softirq, on whatever the CPU was running) with ETIMEDOUT."""
    started = time.monotonic()
    procs = []
    with Netns("tcp dport %d drop" % TIMEOUT_PORT) as ns:
        try:
            for cpu in cpus:
                procs.append(sc._spawn("cli", comm_prefix, _connect_all, family, TIMEOUT_PORT, n, False, 1, 15.0,
                                       spread, cpu, netns=ns.name))
            sc._finish(procs, started + 40)
        except BaseException:
            sc._abort(procs)
            raise
    return {
        "comms": {"cli": procs[0].info.get("comm")},
        "port": TIMEOUT_PORT,
        "remote": sc._loopback(family),
        "so_errors": [res for p in procs for op, res in p.calls if op == "so_error"],
        "unfinished": sum(p.info.get("unfinished", 0) for p in procs),
        "errors": [p.error for p in procs if p.error],
    }


def _burn(rep, cpu: int, stop: sc._Event, seconds: float) -> None:
    """Keep one CPU busy (never idle: its timers stay on it) until `stop` or `seconds`."""
    os.sched_setaffinity(0, {cpu})
    end = time.monotonic() + seconds
    while time.monotonic() < end and not select.select([stop.r], [], [], 0)[0]:
        for _ in range(2000):
            pass


def _connect_then_spin(rep, family: int, port: int, n: int, cause: str, spread: float, stop: sc._Event,
                       wait: float) -> None:
    """n non-blocking connects from CPU 0, whose SYNs nftables drops; then, from CPU 1, read SO_ERROR of the
    next attempt to fail in a tight loop, so that the error is often taken while the kernel, on CPU 0, is
    still between publishing it and closing the attempt. cause "timeout": TCP_SYNCNT 1, the retransmission
    timer gives up (ETIMEDOUT). cause "reset": the drop rule is removed after the connects, so the timer's
    first retransmitted SYN meets no listener and the reset comes back in softirq (ECONNREFUSED).
    Records each outcome ("so_error") and how many were taken while the socket was still in SYN_SENT
    (TCP_INFO read after SO_ERROR returned it): the race happened, seen from outside errnomon."""
    os.sched_setaffinity(0, {0})
    socks = []
    try:
        _start_attempts(rep, family, port, n, socks, 1 if cause == "timeout" else None, spread)
        if cause == "reset":
            subprocess.run(["nft", "delete", "table", "inet", "errnomon_core"], check=True, timeout=10)
        os.sched_setaffinity(0, {1})
        deadline = time.monotonic() + wait
        in_syn_sent = 0
        for s in socks:
            while time.monotonic() < deadline:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    in_syn_sent += _tcp_state(s) == TCP_SYN_SENT
                    rep.record("so_error", sc._errname(err), True)
                    break
        rep.set("taken_in_syn_sent", in_syn_sent)
    finally:
        stop.set()
        for s in socks:
            s.close()


def errors_taken_while_closing(comm_prefix: str, cause: str, n: int, spread: float = 0.02) -> dict:
    """n attempts that fail in the kernel on CPU 0 (kept busy by a burner) while their program spins on
    SO_ERROR on CPU 1 (see _connect_then_spin): "timeout" or "reset". Needs two CPUs."""
    started = time.monotonic()
    procs = []
    stop = sc._Event()
    with Netns("tcp dport %d drop" % TIMEOUT_PORT) as ns:
        try:
            procs.append(sc._spawn("burn", comm_prefix, _burn, 0, stop, 30.0))
            procs.append(sc._spawn("cli", comm_prefix, _connect_then_spin, socket.AF_INET, TIMEOUT_PORT, n, cause,
                                   spread, stop, 15.0, netns=ns.name))
            sc._finish(procs, started + 40)
        except BaseException:
            sc._abort(procs)
            raise
        finally:
            stop.close()
    return sc._result("errors_taken_while_closing_" + cause, socket.AF_INET, TIMEOUT_PORT,
                      sc._loopback(socket.AF_INET), procs, started)


def _connect_then_abandon(rep, family: int, port: int, how: str, n: int) -> None:
    """n non-blocking connects whose SYNs are dropped; after 0.3 s (still in SYN_SENT) the program gives each
    up itself: close(), shutdown(SHUT_RDWR) or connect(AF_UNSPEC) (both disconnect it in the kernel, which
    then records ECONNRESET on it: the program's own doing). Records SO_ERROR after the disconnects."""
    socks = []
    try:
        _start_attempts(rep, family, port, n, socks)
        time.sleep(0.3)
        for s in socks:
            state = _tcp_state(s)
            assert state == TCP_SYN_SENT, "not connecting any more (TCP state %d)" % state
            if how == "close":
                s.close()
                continue
            if how == "shutdown":
                rep.call("shutdown", s.shutdown, socket.SHUT_RDWR)
            else:
                unspec = (ctypes.c_ubyte * 16)()  # struct sockaddr, sa_family AF_UNSPEC (0)
                ok = sc._libc.connect(s.fileno(), unspec, len(unspec)) == 0
                rep.record("connect_unspec", "OK" if ok else sc._errname(ctypes.get_errno()), not ok)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            rep.record("so_error", sc._errname(err) if err else "OK", bool(err))
    finally:
        for s in socks:
            s.close()


def abandoned_attempts(comm_prefix: str, how: str, n: int) -> dict:
    """n connection attempts the program gives up while they are connecting (see _connect_then_abandon)."""
    started = time.monotonic()
    procs = []
    with Netns("tcp dport %d drop" % TIMEOUT_PORT) as ns:
        try:
            procs.append(sc._spawn("cli", comm_prefix, _connect_then_abandon, socket.AF_INET, TIMEOUT_PORT, how, n,
                                   netns=ns.name))
            sc._finish(procs, started + sc.SCENARIO_TIMEOUT)
        except BaseException:
            sc._abort(procs)
            raise
    return sc._result("abandoned_attempts_" + how, socket.AF_INET, TIMEOUT_PORT, sc._loopback(socket.AF_INET), procs,
                      started)
