"""Socket errors that need a network: unreachable hosts, a peer that forgets its connections, a full listen queue.

Built on tests/bpf/scenarios.py (forked actors with distinctive comms that report every call's outcome).
Every host lives in a network namespace the scenario creates and always deletes:

    <tag>c (client) 198.18.1.2 --- 198.18.1.1 <tag>r (router) 198.18.2.1 --- 198.18.2.2 <tag>s (server)

198.18.0.0/15 is the benchmarking range: nothing outside these namespaces is ever addressed. The router
forwards; nftables in the router's namespace answers with ICMP unreachable, or drops. 198.18.9.0/24 has no
route at the router (ICMP net unreachable).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import time

from . import scenarios
from .scenarios import (CALL_TIMEOUT, FAILED, SCENARIO_TIMEOUT, TCP_USER_TIMEOUT, _abort, _bound, _Event,
                        _finish, _linger0, _Proc, _Reporter, _result, _run, _spawn, _wait_event, _wait_info)

CLIENT, ROUTER_C, ROUTER_S, SERVER = "198.18.1.2", "198.18.1.1", "198.18.2.1", "198.18.2.2"
NO_ROUTE = "198.18.9.9"  # the router has no route to 198.18.9.0/24
SERVICE_PORT = 8080
_seq = 0


def _names(tag: str) -> tuple[str, str, str]:
    global _seq
    _seq += 1
    base = "%s%s%d-%d" % (scenarios.RUN_TAG, tag, os.getpid() % 100000, _seq)
    return base + "c", base + "r", base + "s"


def _nft(netns: str, ruleset: str) -> None:
    _run(["ip", "netns", "exec", netns, "nft", "-f", "-"], stdin=ruleset)


class Network:
    """Client, router and server namespaces joined by veth pairs; deleted on exit, whatever happened."""

    def __init__(self, tag: str):
        self.cli, self.rtr, self.srv = _names(tag)
        self.created: list[str] = []

    def __enter__(self) -> "Network":
        try:
            for ns in (self.cli, self.rtr, self.srv):
                _run(["ip", "netns", "add", ns])
                self.created.append(ns)
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # veth names are per namespace: the same short names serve every scenario
            _run(["ip", "-n", self.cli, "link", "add", "eth0", "type", "veth", "peer", "name", "rc",
                  "netns", self.rtr])
            _run(["ip", "-n", self.srv, "link", "add", "eth0", "type", "veth", "peer", "name", "rs",
                  "netns", self.rtr])
            for ns, dev, addr in ((self.cli, "eth0", CLIENT), (self.rtr, "rc", ROUTER_C),
                                  (self.rtr, "rs", ROUTER_S), (self.srv, "eth0", SERVER)):
                _run(["ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", self.cli, "route", "add", "default", "via", ROUTER_C])
            _run(["ip", "-n", self.srv, "route", "add", "default", "via", ROUTER_S])
            # forwarding is per namespace: the host's own setting is untouched
            # (the file, not sysctl(8): procps is not in every image, e.g. the kernel-matrix guests')
            _run(["ip", "netns", "exec", self.rtr, "sh", "-c", "echo 1 >/proc/sys/net/ipv4/ip_forward"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def reject(self, icmp_type: str, port: int) -> None:
        """The router answers every forwarded segment to the server's port with ICMP `icmp_type`."""
        _nft(self.rtr, "table inet errnomon_r {\n chain forw {\n  type filter hook forward priority 0;\n"
                       "  ip daddr %s tcp dport %d reject with icmp type %s\n }\n}\n" % (SERVER, port, icmp_type))

    def __exit__(self, *exc) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.created = []


# --------------------------------------------------------------------------
# actors


def _srv_listen(rep: _Reporter, family: int, release: _Event) -> None:
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", SERVICE_PORT))
    ls.listen(16)
    rep.set("port", SERVICE_PORT)
    conns = []
    while not release.wait(0.05):
        if select.select([ls], [], [], 0)[0]:
            conns.append(ls.accept()[0])
    for c in conns:
        _linger0(c)
        c.close()
    ls.close()


def _connect(rep: _Reporter, addr: str, port: int, blocking: bool) -> socket.socket | None:
    """One connect, blocking or as an event loop does it (EINPROGRESS, poll, SO_ERROR); records the outcome."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)  # a lost SYN gives up after ~3 s, not 2 minutes
    if blocking:
        _bound(s)
        if rep.call("connect", s.connect, (addr, port)) is FAILED:
            s.close()
            return None
        return s
    s.setblocking(False)
    err = s.connect_ex((addr, port))
    if err not in (0, errno.EINPROGRESS):
        rep.record("connect", errno.errorcode.get(err, "E%d" % err), True)
        s.close()
        return None
    select.select([], [s], [], CALL_TIMEOUT)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        rep.record("so_error", errno.errorcode.get(err, "E%d" % err), True)
        s.close()
        return None
    rep.record("so_error", "OK", False)
    s.setblocking(True)
    _bound(s)
    return s


def _cli_connect(rep: _Reporter, family: int, addr: str, port: int, blocking: bool, n: int) -> None:
    for _ in range(n):
        s = _connect(rep, addr, port, blocking)
        if s is not None:
            s.close()


def _cli_path_breaks(rep: _Reporter, family: int, port: int, connected: _Event, go: _Event) -> None:
    s = _connect(rep, SERVER, port, True)
    if s is None:
        return
    s.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 1500)
    connected.set()
    _wait_event(go, "the path to break")
    rep.call("send", s.send, b"x" * 64, socket.MSG_NOSIGNAL)  # queued: the error comes later
    _bound(s, 8.0)
    rep.call("recv", s.recv, 64, eof_is_errno=True)  # EHOSTUNREACH when TCP_USER_TIMEOUT expires
    s.close()


def _run_scenario(name, comm_prefix, events, server, client, conduct, prepare=None, **extra) -> dict:
    """Server then client, each (function, args, "srv" or "cli": the namespace it runs in), in a fresh Network.

    prepare(net) runs first and returns the address the client dials (default SERVER; args may be a function
    of it); conduct(net, srv, cli,
    deadline) drives the scenario once both run and returns extra result keys. Every process is reaped (or
    killed at the deadline), every event closed and the namespaces deleted, whatever happens."""
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    procs: list[_Proc] = []
    try:
        with Network(comm_prefix) as net:
            remote = prepare(net) if prepare else SERVER
            try:
                for role, (fn, args, where) in (("srv", server), ("cli", client)):
                    args = args(remote) if callable(args) else args
                    procs.append(_spawn(role, comm_prefix, fn, socket.AF_INET, *args, netns=getattr(net, where)))
                    if role == "srv":
                        _wait_info(procs[0], "port", deadline)
                extra.update(conduct(net, procs[0], procs[1], deadline) or {})
                _finish(procs, deadline)
            except BaseException:
                _abort(procs)
                raise
    finally:
        for ev in events:
            ev.close()
    return _result(name, socket.AF_INET, SERVICE_PORT, remote, procs, started, **extra)


# --------------------------------------------------------------------------
# scenarios


def unreachable(comm_prefix: str, kind: str, blocking: bool, n: int = 1) -> dict:
    """n connects from the client namespace that the network refuses.

    kind "host": the router answers ICMP host-unreachable (EHOSTUNREACH); "net": the router has no route
    and answers ICMP net-unreachable (ENETUNREACH); "local": the client itself has no route (ENETUNREACH
    from connect(), no packet sent). Blocking connects record op "connect"; non-blocking ones record
    "so_error" (what getsockopt(SO_ERROR) said after poll), as event loops see it.
    """
    release = _Event()

    def prepare(net):
        if kind == "host":
            net.reject("host-unreachable", SERVICE_PORT)
            return SERVER
        if kind == "local":
            _run(["ip", "-n", net.cli, "route", "del", "default"])
        elif kind != "net":
            raise ValueError(kind)
        return NO_ROUTE

    def conduct(net, srv, cli, deadline):
        _finish([cli], deadline)
        release.set()

    return _run_scenario("unreachable", comm_prefix, (release,), (_srv_listen, (release,), "srv"),
                         (_cli_connect, lambda remote: (remote, SERVICE_PORT, blocking, n), "cli"), conduct, prepare,
                         kind=kind, blocking=blocking)



def path_breaks(comm_prefix: str) -> dict:
    """An established connection whose path breaks: the router starts answering ICMP host-unreachable.

    For an established socket that ICMP is a soft error (RFC 1122): TCP keeps retransmitting until
    TCP_USER_TIMEOUT (1.5 s) expires and then fails with EHOSTUNREACH instead of ETIMEDOUT.
    Expected: errnos {"srv": [], "cli": ["EHOSTUNREACH"]}.
    """
    release, connected, go = _Event(), _Event(), _Event()

    def conduct(net, srv, cli, deadline):
        if connected.wait(CALL_TIMEOUT):
            net.reject("host-unreachable", SERVICE_PORT)
            go.set()
        _finish([cli], deadline)
        release.set()

    return _run_scenario("path_breaks", comm_prefix, (release, connected, go), (_srv_listen, (release,), "srv"),
                         (_cli_path_breaks, (SERVICE_PORT, connected, go), "cli"), conduct)



def _srv_accept_one(rep: _Reporter, family: int):
    """(listener, the first connection it accepted), or None if the accept failed."""
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((SERVER, SERVICE_PORT))
    ls.listen(4)
    rep.set("port", SERVICE_PORT)
    res = rep.call("accept", ls.accept)
    return None if res is FAILED else (ls, res[0])


def _srv_forget(rep: _Reporter, family: int, accepted: _Event, forget: _Event) -> None:
    accepted_one = _srv_accept_one(rep, family)
    if accepted_one is None:
        return
    ls, conn = accepted_one
    accepted.set()
    _wait_event(forget, "the drop rule")
    _linger0(conn)  # the RST it sends is dropped: the connection vanishes from this host only
    conn.close()
    ls.close()


def _cli_after_reboot(rep: _Reporter, family: int, port: int, rebooted: _Event) -> None:
    s = _connect(rep, SERVER, port, True)
    if s is None:
        return
    rep.set("local_port", s.getsockname()[1])
    _wait_event(rebooted, "the server to forget", SCENARIO_TIMEOUT)
    rep.call("send", s.send, b"x" * 16, socket.MSG_NOSIGNAL)  # queued; the answer is an RST for no socket
    rep.call("recv", s.recv, 64, eof_is_errno=True)  # ECONNRESET
    s.close()


def peer_reboot(comm_prefix: str) -> dict:
    """The server host forgets an established connection silently, as a crash and reboot would.

    The server's namespace drops its own outgoing TCP, the server aborts the connection and closes its
    listener (its RST never leaves), the drop is lifted, then the client writes: the server host answers
    with an RST for no socket (reason NO_SOCKET) and the client's next recv fails with ECONNRESET.
    Expected: errnos {"srv": [], "cli": ["ECONNRESET"]}.
    """
    accepted, forget, rebooted = _Event(), _Event(), _Event()

    def conduct(net, srv, cli, deadline):
        if accepted.wait(CALL_TIMEOUT):
            _nft(net.srv, "table inet errnomon_s {\n chain errnomon_out {\n  type filter hook output priority 0;\n"
                          "  tcp sport %d drop\n }\n}\n" % SERVICE_PORT)
            forget.set()
            _finish([srv], deadline)
            _run(["ip", "netns", "exec", net.srv, "nft", "delete", "table", "inet", "errnomon_s"])
            rebooted.set()

    return _run_scenario("peer_reboot", comm_prefix, (accepted, forget, rebooted),
                         (_srv_forget, (accepted, forget), "srv"),
                         (_cli_after_reboot, (SERVICE_PORT, rebooted), "cli"), conduct)



CONNTRACK_TIMEOUT = 2  # seconds an idle established flow lives in the router's conntrack table


def _srv_echo_once(rep: _Reporter, family: int, release: _Event) -> None:
    accepted_one = _srv_accept_one(rep, family)
    if accepted_one is None:
        return
    ls, conn = accepted_one
    data = rep.call("recv", conn.recv, 64)
    if data is not FAILED and data:
        rep.call("send", conn.send, data, socket.MSG_NOSIGNAL)
    _wait_event(release, "the end of the scenario", SCENARIO_TIMEOUT)
    conn.close()  # still established here: the middlebox, not this host, ended the connection for the client
    ls.close()


def _cli_idle_past_conntrack(rep: _Reporter, family: int, port: int, idle: float) -> None:
    s = _connect(rep, SERVER, port, True)
    if s is None:
        return
    rep.set("local_port", s.getsockname()[1])
    rep.call("send", s.send, b"ping", socket.MSG_NOSIGNAL)
    rep.call("recv", s.recv, 64)
    time.sleep(idle)  # the router's conntrack entry expires meanwhile
    rep.call("send", s.send, b"again", socket.MSG_NOSIGNAL)  # queued; the router answers with its own RST
    _bound(s, 5.0)
    rep.call("recv", s.recv, 64, eof_is_errno=True)  # ECONNRESET
    s.close()


def conntrack_forgets(comm_prefix: str) -> dict:
    """A stateful firewall between the hosts forgets an idle connection and answers the next segment with
    its own RST, as a NAT gateway or load balancer with a short idle timeout does.

    The router's conntrack keeps an established flow CONNTRACK_TIMEOUT s (its namespace's own
    nf_conntrack_tcp_timeout_established; nf_conntrack_tcp_loose=0, so a mid-stream segment does not
    create a new entry) and nftables rejects what conntrack calls invalid with a TCP reset. The client
    exchanges one message, stays idle longer than that, and writes again: the RST comes from the router, the
    server never sends one. Extra result keys "rejected": the router rule's own packet counter; "default_ttl":
    {"rtr", "srv"}: each namespace's net.ipv4.ip_default_ttl (the router's reset leaves with its own, the
    server's segments with the server's, one less after the router).
    Expected: errnos {"srv": [], "cli": ["ECONNRESET"]}.
    """
    release = _Event()
    ttls = {}

    def prepare(net):
        # the rule first: its ct expression loads nf_conntrack (a fresh guest has not), whose sysctls follow
        _nft(net.rtr, "table inet errnomon_ct {\n chain forw {\n  type filter hook forward priority 0;\n"
                      "  ct state invalid counter reject with tcp reset\n }\n}\n")
        for name, value in (("nf_conntrack_tcp_loose", 0),
                            ("nf_conntrack_tcp_timeout_established", CONNTRACK_TIMEOUT)):
            _run(["ip", "netns", "exec", net.rtr, "sh", "-c",
                  "echo %d >/proc/sys/net/netfilter/%s" % (value, name)])
        for role, ns in (("rtr", net.rtr), ("srv", net.srv)):
            ttls[role] = int(subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_default_ttl"],
                                            capture_output=True, text=True, check=True, timeout=10).stdout)
        return SERVER

    def conduct(net, srv, cli, deadline):
        _finish([cli], deadline)
        out = subprocess.run(["ip", "netns", "exec", net.rtr, "nft", "list", "table", "inet", "errnomon_ct"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        release.set()
        words = out.split()
        return {"rejected": int(words[words.index("packets") + 1]), "default_ttl": dict(ttls)}

    return _run_scenario("conntrack_forgets", comm_prefix, (release,), (_srv_echo_once, (release,), "srv"),
                         (_cli_idle_past_conntrack, (SERVICE_PORT, CONNTRACK_TIMEOUT + 1.5), "cli"),
                         conduct, prepare)


def _netstat(netns: str) -> dict:
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/netstat"], capture_output=True,
                         text=True, check=True, timeout=10).stdout.splitlines()
    counters = {}
    for names, values in zip(out[0::2], out[1::2]):
        counters.update(zip(names.split()[1:], map(int, values.split()[1:])))
    return counters


def _srv_never_accept(rep: _Reporter, family: int, release: _Event) -> None:
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.bind((SERVER, SERVICE_PORT))
    ls.listen(1)  # accept queue of 2; never accepted
    rep.set("port", SERVICE_PORT)
    _wait_event(release, "release", SCENARIO_TIMEOUT)
    ls.close()


def _cli_flood(rep: _Reporter, family: int, port: int, n: int, hold: float) -> None:
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((SERVER, port))
        socks.append(s)
    time.sleep(hold)  # SYNs and their retransmissions reach the full queue meanwhile
    for s in socks:
        _linger0(s)
        s.close()


def listen_overflow(comm_prefix: str, n: int = 6, hold: float = 1.5, while_listening=None) -> dict:
    """A listener with backlog 1 that never accepts, n non-blocking connects held for `hold` seconds.

    Runs in the server namespace alone (client and server on its loopback), so that namespace's
    ListenDrops/ListenOverflows counters are this scenario's only. Extra keys: listen_drops and
    listen_overflows (the namespace's counters after the clients gave up; they start at 0).
    while_listening(listen_drops, comm of the server) runs after the clients gave up, while the listener
    still exists (a poller must see it before it closes).
    """
    release = _Event()

    def conduct(net, srv, cli, deadline):
        _finish([cli], deadline)
        counters = _netstat(net.srv)
        if while_listening is not None:
            while_listening(counters["ListenDrops"], srv.info.get("comm"))
        release.set()
        return {"listen_drops": counters["ListenDrops"], "listen_overflows": counters["ListenOverflows"]}

    return _run_scenario("listen_overflow", comm_prefix, (release,), (_srv_never_accept, (release,), "srv"),
                         (_cli_flood, (SERVICE_PORT, n, hold), "srv"), conduct)
