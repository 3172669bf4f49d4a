"""Owners of the TCP sockets that existed before errnomon started, for the attribution tables.

The programs learn a socket's owner in process context (connect(), listen(), the first failing call) and
keep it by socket pointer; a socket opened before they were attached is unknown to them, so its resets and
error reports would carry no process. Right after the programs are attached, errnomon

  1. lists every TCP socket of its network namespace with sock_diag (inet_diag, through pyroute2): tuple,
     state, inode and cookie. The cookie is the kernel's socket cookie (sock_gen_cookie); the dump
     generates it, stores it in the socket (sk_cookie) and it never changes or repeats;
  2. finds which process holds each socket inode by reading the links in /proc/<pid>/fd;
  3. writes the owners into the `seeded` map, by cookie (the programs look there when a socket pointer
     is not in `owners`, and move the entry over), and the listening ports into `listeners`.

Attaching first and listing second means no socket falls between the two: one opened meanwhile is seen
by the programs (whose own entries win) and perhaps listed as well.

Which process: the one whose fd table holds the socket. When several do (a fork after connect() or
listen(), a socket passed over a unix socket), the oldest holder (earliest start time, then lowest pid):
normally the one that created the socket before forking, which is the process the programs would have
recorded. comm is the process's (its main thread's) name. A listening port held by several processes is
merged the way the programs merge listen() calls: one pid or pid 0, and the comm only if all agree.
"""

import errno
import functools
import os
import socket
import struct
import time
from collections import namedtuple

from . import abi, bpfmap, cgroups


# include/net/tcp_states.h
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_TIME_WAIT, TCP_CLOSE, TCP_LISTEN = 1, 2, 3, 6, 7, 10
# Not seeded: TIME_WAIT and SYN_RECV are timewait and request minisockets (no file, never an owner's);
# CLOSE sockets are not connected: connect() or listen() will tell the programs who owns them.
SKIPPED_STATES = {TCP_SYN_RECV, TCP_TIME_WAIT, TCP_CLOSE}

OWNER_CONNECTED = abi.DEFINES["OWNER_CONNECTED"]
OWNER_ACCEPTED = abi.DEFINES["OWNER_ACCEPTED"]
OWNER_AMBIGUOUS = abi.DEFINES["OWNER_AMBIGUOUS"]
OWNER_ESTABLISHED = abi.DEFINES["OWNER_ESTABLISHED"]
BPF_NOEXIST = 1
# The pyroute2 versions that decode the real kernel dumps of tests/unit/sock_diag in tests/unit: Debian 11
# (0.5.14), Ubuntu 22.04 (0.6.4), Debian 12 (0.7.2) and 13 (0.7.7), each in its kernel-matrix guest, and
# PyPI's 0.9.7 (on a 6.18 host)
PYROUTE2_TESTED = ("0.5.14", "0.6.4", "0.7.2", "0.7.7", "0.9.7")

# One TCP socket as inet_diag reports it; addresses are 16 bytes (IPv4: the first 4, the rest zero).
TcpSocket = namedtuple("TcpSocket", "family state sport dport src dst cookie inode")
Process = namedtuple("Process", "tgid comm cgroup")


class SeedError(Exception):
    """Existing sockets cannot be listed at all: one line, logged as a warning."""


# ---- 1. the sockets: inet_diag --------------------------------------------------------------------------

# struct inet_diag_msg (include/uapi/linux/inet_diag.h), as pyroute2's inet_diag_msg.fields describe it:
# family, state, timer, retrans, id {sport, dport (big-endian), src[4], dst[4] (big-endian words), if,
# cookie[2]}, expires, rqueue, wqueue, uid, inode. The cookie's two u32 halves, low first, read as one u64.
INET_DIAG_MSG = struct.Struct("=BB2x2s2s16s16s4xQ16xI")


def from_diag(data, offset=0):
    """TcpSocket from the body of an inet_diag_msg (after the netlink header)."""
    family, state, sport, dport, src, dst, cookie, inode = INET_DIAG_MSG.unpack_from(data, offset)
    if family == socket.AF_INET:  # the kernel fills the first word only
        src, dst = src[:4] + bytes(12), dst[:4] + bytes(12)
    return TcpSocket(family, state, int.from_bytes(sport, "big"), int.from_bytes(dport, "big"), src, dst,
                     cookie, inode)


SOCK_DIAG_BY_FAMILY = 20  # the type of every message of a dump but the last (NLMSG_DONE)


def _lean_ft_decode(msg, offset):
    msg.ft_decode(offset)


@functools.lru_cache(maxsize=None)
def _diag_classes():
    from pyroute2.netlink import nlmsg
    from pyroute2.netlink.diag import DiagSocket, inet_diag_msg

    class lean_inet_diag_msg(inet_diag_msg):
        """pyroute2's inet_diag_msg, its body read in one unpack into a TcpSocket (msg["tcp_socket"]), without
        the attributes (NLAs) and address formatting errnomon does not use: 100k sockets would otherwise
        take seconds to decode.

        Where pyroute2 versions differ: from 0.6, nlmsg.decode() reads the netlink header and then calls the
        method self.ft_decode(offset) for the body. 0.5 (0.5.14 on Debian 11) calls self._ft_decode(self,
        offset) instead, a function each message is given by compile_ft() when it is made; 0.6 removed
        both, so compile_ft() here is called by 0.5 only, and points the same call at ft_decode()."""

        decode = nlmsg.decode  # not inet_diag_msg's, which formats the addresses

        def ft_decode(self, offset):
            self["tcp_socket"] = from_diag(self.data, offset)

        def compile_ft(self):
            self._ft_decode = _lean_ft_decode

    assert inet_diag_msg.fields[-1] == ("idiag_inode", "I") and len(inet_diag_msg.fields) == 15
    return DiagSocket, lean_inet_diag_msg


def lean_marshal(marshal, message_class):
    """A pyroute2 MarshalDiag (a DiagSocket's .marshal) made to decode IPv4 and IPv6 inet_diag messages
    with message_class (_diag_classes()[1])."""
    marshal.msg_map = {socket.AF_INET: message_class, socket.AF_INET6: message_class}
    return marshal


def tcp_sockets(messages):
    """The TcpSockets of a dump's messages, decoded by lean_marshal's class."""
    return [msg["tcp_socket"] for msg in messages if msg["header"]["type"] == SOCK_DIAG_BY_FAMILY]


def dump_tcp(families=(socket.AF_INET, socket.AF_INET6)):
    """Every TCP socket of this network namespace, all states, IPv4 and IPv6. Raises SeedError."""
    try:
        DiagSocket, message_class = _diag_classes()
    except ImportError as e:
        raise SeedError("pyroute2 is not importable (%s): pip install pyroute2 or apt-get install "
                        "python3-pyroute2" % e)
    from pyroute2.netlink.diag import SS_ALL
    out = []
    try:
        with DiagSocket() as ds:
            ds.bind()
            lean_marshal(ds.marshal, message_class)
            for family in families:
                out += tcp_sockets(ds.get_sock_stats(family=family, states=SS_ALL, protocol=socket.IPPROTO_TCP))
    except (OSError, ValueError) as e:  # pyroute2's NetlinkError is an OSError
        raise SeedError("listing TCP sockets with sock_diag failed (%s)" % e)
    except Exception as e:  # noqa: BLE001 - a pyroute2 that decodes differently again
        raise SeedError("listing TCP sockets with sock_diag failed (%s: %s; pyroute2 %s to %s are known to "
                        "work)" % (type(e).__name__, e, PYROUTE2_TESTED[0], PYROUTE2_TESTED[-1]))
    return out


# ---- 2. who holds them: /proc ---------------------------------------------------------------------------

def socket_holders(wanted, proc="/proc"):
    """({socket inode: [tgid, ...]} for the inodes in `wanted`, number of processes whose fd table could
    not be read). Processes that exit meanwhile are skipped silently."""
    holders = {}
    denied = 0
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError as e:
        raise SeedError("cannot list %s (%s)" % (proc, e))
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            with os.scandir(fd_dir) as it:
                entries = [e.path for e in it]
        except PermissionError:
            denied += 1
            continue
        except OSError:  # gone, or a kernel thread's empty table
            continue
        tgid = int(pid)
        for path in entries:
            try:
                target = os.readlink(path)
            except PermissionError:  # CAP_DAC_READ_SEARCH lists fd/, only ptrace access reads its links
                denied += 1
                break
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in wanted:
                    holders.setdefault(inode, []).append(tgid)
    return holders, denied


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def start_time(tgid, proc="/proc"):
    """Start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None if gone."""
    try:
        stat = _read(os.path.join(proc, str(tgid), "stat"))
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def cgroup_id(tgid, cgroup2, proc="/proc"):
    """The cgroup v2 id of a process, as bpf_get_current_cgroup_id() returns it: the inode of its directory
    under the cgroup2 mount. 0 when unknown."""
    if not cgroup2:
        return 0
    try:
        text = _read(os.path.join(proc, str(tgid), "cgroup")).decode(errors="replace")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("0::"):  # the v2 hierarchy's line; its path is relative to the cgroup2 mount
            try:
                return os.stat(os.path.join(cgroup2, line[3:].strip().lstrip("/"))).st_ino
            except OSError:  # moved or removed meanwhile
                return 0
    return 0


def process(tgid, cgroup2, proc="/proc"):
    """Process(tgid, comm as the kernel keeps it, cgroup id), or None if it exited."""
    try:
        comm = _read(os.path.join(proc, str(tgid), "comm")).rstrip(b"\n")[:abi.COMM_LEN - 1]
    except OSError:
        return None
    return Process(tgid, comm, cgroup_id(tgid, cgroup2, proc))


def pick_holder(tgids, proc="/proc"):
    """One process for a socket several hold: the oldest (then the lowest pid); see the module doc."""
    if len(tgids) == 1:
        return tgids[0]
    never = float("inf")
    return min(sorted(set(tgids)), key=lambda t: (start_time(t, proc) or never, t))


# ---- 3. owner records -----------------------------------------------------------------------------------

def service_port(sock, listening_ports, ephemeral):
    """(service port, flags) as the programs would have recorded them: a child of a local listener serves
    its local port (OWNER_ACCEPTED); any other socket was connected, and the remote port is the service
    (OWNER_CONNECTED) -- unless the listener is gone and only the remote port is one the kernel hands
    out to clients. ephemeral: (low, high) of net.ipv4.ip_local_port_range ((0, 0): unknown)."""
    low, high = ephemeral
    if sock.sport in listening_ports:
        return sock.sport, OWNER_ACCEPTED
    if low <= sock.dport <= high and not low <= sock.sport <= high:
        return sock.sport, OWNER_ACCEPTED
    return sock.dport, OWNER_CONNECTED


def owner_record(proc_info, port=0, family=0, flags=0, remote=bytes(16)):
    o = abi.Owner(port=port, family=family, flags=flags)
    if proc_info is not None:
        o.tgid = proc_info.tgid
        o.cgroup = proc_info.cgroup
        o.comm = proc_info.comm
    o.remote[:] = remote
    return o


def merge_listener(owners, count):
    """One Listener for a port several listening sockets share, merged as the programs merge listen()
    calls: the pid if all are one process, else 0; the comm if all agree, else none and OWNER_AMBIGUOUS
    (the first failing call of the process that holds an accepted socket then names it)."""
    rec = abi.Listener(count=count)
    known = [p for p in owners if p is not None]
    if not known:
        return rec
    first = known[0]
    rec.owner = owner_record(first)
    if any(p.tgid != first.tgid for p in known):
        rec.owner.tgid = 0
        if any(p.comm != first.comm for p in known):
            rec.owner.comm = b""
            rec.owner.flags = OWNER_AMBIGUOUS
    if any(p.cgroup != first.cgroup for p in known):
        rec.owner.cgroup = 0
    return rec


def plan(sockets, holder_of, process_of, ephemeral):
    """({cookie: Owner} for the connected and accepted sockets, {port: Listener}).

    holder_of(inode) -> tgid or None; process_of(tgid) -> Process or None."""
    listening = {}
    for s in sockets:
        if s.state == TCP_LISTEN:
            tgid = holder_of(s.inode) if s.inode else None
            listening.setdefault(s.sport, []).append(process_of(tgid) if tgid else None)
    listeners = {port: merge_listener(procs, len(procs)) for port, procs in sorted(listening.items())}
    owners = {}
    for s in sockets:
        if s.state == TCP_LISTEN or s.state in SKIPPED_STATES or not s.cookie:
            continue
        port, flags = service_port(s, listeners, ephemeral)
        if s.state != TCP_SYN_SENT:
            flags |= OWNER_ESTABLISHED  # past its handshake: an error now is not a failed connection attempt
        tgid = holder_of(s.inode) if s.inode else None
        info = process_of(tgid) if tgid else None
        if info is None and port in listeners and flags & OWNER_ACCEPTED:
            # not accept()ed yet, closed by its program (orphaned), or its holder unreadable: as in the
            # programs, a child belongs to whoever listens on its port
            o = abi.Owner.from_buffer_copy(listeners[port].owner)
            o.port, o.family, o.flags = port, s.family, flags | (o.flags & OWNER_AMBIGUOUS)
            o.remote[:] = s.dst
        else:
            # with no process known, the record still gives the service port and remote: the
            # programs fill in the process of a failing call themselves
            o = owner_record(info, port, s.family, flags, s.dst)
        owners[s.cookie] = o
    return owners, listeners


# ---- the tables' sizes ----------------------------------------------------------------------------------

AUTO_LEAST, TABLE_MOST = 65536, 4194304
SOCKSTAT = "/proc/net/sockstat"


def tcp_sockets_allocated(path=SOCKSTAT):
    """Full TCP sockets on the whole host, every network namespace ("TCP: ... alloc N" counts the kernel's
    tcp_sockets_allocated, which is not per namespace; time-wait and request sockets are not in it).
    None when unreadable."""
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if words[:1] == ["TCP:"] and "alloc" in words:
                    return int(words[words.index("alloc") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def table_sizes(max_sockets, sockets):
    """(owners, seeded): the entries of the owner table and of the table of seeded owners.

    max_sockets: kernel.max_sockets (0: auto); sockets: TCP sockets on the host now (None: unknown). Auto
    sizes the owner table at twice the sockets open at start (at least AUTO_LEAST): room for as many again
    before the least recently used are evicted. The seeded table only ever holds the sockets open at start,
    less those the programs have seen since: a quarter more than there are, and never above the owners'."""
    n = sockets or 0
    owners = max_sockets or min(TABLE_MOST, max(AUTO_LEAST, -(-2 * n // 1024) * 1024))
    return owners, min(owners, max(1024, n + n // 4 + 1024))


# ---- all of it ------------------------------------------------------------------------------------------

# sockets listed; records written to `seeded`, and how many of them name a process; listening ports;
# processes whose fd table could not be read; time taken
Result = namedtuple("Result", "sockets owners attributed listeners denied seconds")


def existing_owners(ephemeral, proc="/proc", mountinfo="/proc/self/mountinfo", dump=dump_tcp):
    """Everything but the map writes: (sockets, {cookie: Owner}, {port: Listener}, processes denied)."""
    sockets = dump()
    holders, denied = socket_holders({s.inode for s in sockets if s.inode and s.state not in SKIPPED_STATES},
                                     proc)
    cgroup2 = cgroups.cgroup2_mount(mountinfo)
    processes = {}

    def process_of(tgid):
        if tgid not in processes:
            processes[tgid] = process(tgid, cgroup2, proc)
        return processes[tgid]

    def holder_of(inode):
        tgids = holders.get(inode)
        return pick_holder(tgids, proc) if tgids else None

    owners, listeners = plan(sockets, holder_of, process_of, ephemeral)
    return sockets, owners, listeners, denied


def write(seeded_fd, listeners_fd, owners, listeners):
    """Owners into `seeded`; listeners into `listeners` unless listen() put the port there since the
    programs were attached (that entry is fresher)."""
    for cookie, owner in owners.items():
        bpfmap.update(seeded_fd, struct.pack("Q", cookie), bytes(owner))
    for port, rec in listeners.items():
        try:
            bpfmap.update(listeners_fd, struct.pack("H", port), bytes(rec), BPF_NOEXIST)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def seed(seeded_fd, listeners_fd, ephemeral, **kw):
    """List, resolve and write. Returns a Result; raises SeedError when nothing could be done."""
    t0 = time.monotonic()
    sockets, owners, listeners, denied = existing_owners(ephemeral, **kw)
    try:
        write(seeded_fd, listeners_fd, owners, listeners)
    except OSError as e:
        raise SeedError("writing the seeded owners into the BPF maps failed (%s)" % e)
    attributed = sum(1 for o in owners.values() if o.comm)
    return Result(len(sockets), len(owners), attributed, len(listeners), denied, time.monotonic() - t0)
