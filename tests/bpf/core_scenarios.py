"""Socket-error generators for connect failures, resets sent and nested tracing load.

Built on tests/bpf/scenarios.py (forked children with distinctive comms reporting every call over a pipe).
Each generator's own view (connect()'s errno, getsockopt(SO_ERROR) after poll, the recv that saw the reset)
is the ground truth the tests compare errnomon with. Network namespaces and their nftables rules are named
after the test tag and deleted at the end.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import time

from . import scenarios as sc

TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
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
        ruleset = ("table inet errnomon_core {\n  chain out {\n    type filter hook output priority 0; "
                   "policy accept;\n    %s\n  }\n}\n" % rule)
        sc._run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], stdin=ruleset)

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], timeout=10, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def _connect_all(rep, family: int, port: int, n: int, blocking: bool, syncnt: int | None, wait: float) -> None:
    """n connection attempts to (loopback, port). Blocking: connect()'s errno is recorded. Non-blocking:
    connect() must say EINPROGRESS; then poll() for the outcome and record getsockopt(SO_ERROR) as
    "so_error" - what an event loop reads."""
    host = sc._loopback(family)
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        if syncnt:
            s.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, syncnt)
        if blocking:
            sc._bound(s, wait)
            rep.call("connect", s.connect, (host, port))
            s.close()
            continue
        s.setblocking(False)
        err = s.connect_ex((host, port))
        rep.record("connect", sc._errname(err), err not in (0, errno.EINPROGRESS))
        socks.append(s)
    p = select.poll()
    for s in socks:
        p.register(s.fileno(), select.POLLOUT | select.POLLERR)
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

