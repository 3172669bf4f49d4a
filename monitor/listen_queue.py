"""Listen-queue overflow per listener, from the kernel's own drop counter of each listening socket.

When a listener's accept queue (or its SYN queue, without syncookies) is full, Linux drops the SYN or the
final ACK silently and increments the listener's drop counter (sk_drops, ss -ltm's d<N>) along with the
host-wide ListenDrops. No tracepoint fires there. Two ways to read the counter, cheapest first:

  1. In the kernel (KernelListeners): the programs follow every listening socket from listen() to its close
     (bpf/errnomon.bpf.c, listen_socks) and count its drops at the close, so a short-lived listener's drops
     and a listener's last ones are counted; a sweep every poll (the sweep_listeners program, run through
     BPF_PROG_TEST_RUN over the followed sockets) counts those of listeners still open. Its cost grows with
     the listeners, not with the processes or network namespaces of the host. Listeners older than errnomon
     (no event told the programs about them) are found once at start-up, in every network namespace, and
     handed to the programs by the tcp iterator (KernelListeners.adopt), run once in each of their
     namespaces; those it cannot hand over (no iterator in the kernel or bcc) are read by (2) in their
     namespaces only, until they close.
  2. sock_diag (the fallback rung, where the kernel has no sk_drops in BTF or no inet_sock_set_state): a dump
     of the LISTEN sockets with INET_DIAG_SKMEMINFO in every network namespace that has processes (found by
     a scan of /proc), each poll. The counter is cumulative, so a poll only delays a count; but a listener's
     drops after its last poll are lost with it, and one that lives between two polls is never seen.

Data flow: the kernel's counts reach the aggregator through the drain like every other metric; poll()
returns the sock_diag ones as decode.Event(metric="listen_drops") increments, like a drain.
"""

import ctypes
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass

from . import abi, bpfmap, cgroups, seed
from .decode import Event

log = logging.getLogger("errnomon.listen")

TCP_LISTEN = 10
INET_DIAG_SKMEMINFO = 7
SK_MEMINFO_DROPS = 8
CLONE_NEWNET = 0x40000000
PROC = "/proc"

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Listener:
    """One listening socket as sock_diag reports it."""
    cookie: int
    inode: int
    port: int
    drops: int       # sk_drops: connection attempts dropped since the socket was created
    queued: int      # connections waiting in the accept queue
    limit: int       # the accept queue's limit (listen() backlog, capped by net.core.somaxconn)


def skmeminfo_drops(attr):
    """The drops field of an INET_DIAG_SKMEMINFO attribute, as pyroute2 renders it ('00:01:...' hex)."""
    if not attr:
        return 0
    raw = bytes.fromhex(attr.replace(":", "")) if isinstance(attr, str) else bytes(attr)
    if len(raw) < 4 * (SK_MEMINFO_DROPS + 1):
        return 0
    return struct.unpack_from("=I", raw, 4 * SK_MEMINFO_DROPS)[0]


def listeners_of(messages):
    """Listeners from the messages of a LISTEN dump with INET_DIAG_SKMEMINFO, as pyroute2's own inet_diag_msg
    decodes them (its fields and 'hex' attributes are read alike by pyroute2 0.5.14 to 0.7.7: the real dumps
    in tests/unit/sock_diag)."""
    out = []
    for msg in messages:
        if msg["header"]["type"] != seed.SOCK_DIAG_BY_FAMILY or msg["idiag_state"] != TCP_LISTEN:
            continue
        out.append(Listener(cookie=msg["idiag_cookie"], inode=msg["idiag_inode"], port=msg["idiag_sport"],
                            drops=skmeminfo_drops(msg.get_attr("INET_DIAG_SKMEMINFO")),
                            queued=msg["idiag_rqueue"], limit=msg["idiag_wqueue"]))
    return out


def open_diag():
    """A sock_diag socket of the calling thread's network namespace: it keeps reading that namespace wherever the
    thread goes afterwards."""
    from pyroute2.netlink.diag import DiagSocket  # netlink by a well-kept library; imported on first poll

    ds = DiagSocket()
    ds.bind()
    return ds


def listeners_in(ds):
    """Every TCP listener (IPv4 and IPv6) of the namespace a sock_diag socket belongs to."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        out += listeners_of(ds.get_sock_stats(family=family, states=1 << TCP_LISTEN,
                                              extensions=1 << (INET_DIAG_SKMEMINFO - 1)))
    return out


def dump_listeners():
    """Every TCP listener (IPv4 and IPv6) in the calling thread's network namespace."""
    ds = open_diag()
    try:
        return listeners_in(ds)
    finally:
        ds.close()


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def _enter(netns, pids):
    """Move the calling thread into network namespace netns, through the first of its processes that still
    exists."""
    for pid in pids:
        try:
            fd = os.open("%s/%d/ns/net" % (PROC, pid), os.O_RDONLY)
        except OSError:
            continue
        try:
            return _setns(fd)
        finally:
            os.close(fd)
    raise OSError(3, "no process of netns %d left" % netns)


def network_namespaces(proc=PROC):
    """{netns inode: [pids in it]} for every process whose namespace we may read."""
    spaces = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            ino = os.stat("%s/%s/ns/net" % (proc, name)).st_ino
        except OSError:  # gone, or a kernel thread we may not inspect
            continue
        spaces.setdefault(ino, []).append(int(name))
    return spaces


class KernelListeners:
    """The listening sockets the programs follow (listen_socks): sweep() has the sweep_listeners program count
    each one's drops since it last read them into the counts map, where the next drain finds them."""

    BATCH = abi.DEFINES["LISTEN_SWEEP_BATCH"]
    MOST = abi.DEFINES["LISTEN_SOCKETS"]

    def __init__(self, map_fd, prog_fd, adopt=None):
        self.map_fd = map_fd
        self.prog_fd = prog_fd
        # (listen_adopt map fd, tcp iterator link fd): hands listeners older than errnomon to the programs
        self.adopt_fd, self.iter_link = adopt if adopt else (None, None)

    def _keys(self):
        return bpfmap.keys(self.map_fd, 8, self.MOST)

    def sweep(self):
        """Runs the program over every followed listener; returns how many there were."""
        keys = [struct.unpack("=Q", k)[0] for k in self._keys()]
        for i in range(0, len(keys), self.BATCH):
            batch = keys[i:i + self.BATCH]
            bpfmap.run_raw_tracepoint(self.prog_fd, batch + [0] * (self.BATCH - len(batch)))
        return len(keys)

    def adopt(self, listeners, enter=None):
        """Hand listeners older than errnomon to the programs: listeners is {cookie: ListenSock as listen_socks
        will hold it (owner, the drop counter already accounted for)}. The tcp iterator runs once in the calling
        thread's network namespace, after enter() (a setns) if given, and moves each one it finds into
        listen_socks. Returns the cookies adopted; the others stay with the caller. Without the iterator, none."""
        if self.adopt_fd is None or not listeners:
            return set()
        keys = {cookie: struct.pack("=Q", cookie) for cookie in listeners}
        for cookie, value in listeners.items():
            bpfmap.update(self.adopt_fd, keys[cookie], bytes(value))
        try:
            if enter is not None:
                enter()
            bpfmap.run_iterator(self.iter_link)
        finally:  # whatever happened, nothing stays behind for a later run to adopt by mistake
            left = {cookie for cookie, key in keys.items() if bpfmap.delete(self.adopt_fd, key)}
        return set(listeners) - left

    def cookies(self):
        """The socket cookies of the followed listeners, as the last sweep read them (0s left out)."""
        out = set()
        for k in self._keys():
            raw = bpfmap.lookup(self.map_fd, k, ctypes.sizeof(abi.ListenSock))
            if raw:
                cookie = abi.ListenSock.from_buffer_copy(raw).cookie
                if cookie:
                    out.add(cookie)
        return out


class ListenQueues:
    """Reads listeners' drop counters with sock_diag; turns increases into listen_drops events.

    A listener seen at the first poll starts from the value it had then (drops before errnomon started are
    not ours to report); one that appears later counts from zero. Its owner is the process holding its
    inode, looked up once per listener the way seeding does it (monitor/seed.py: the oldest holder).

    With kernel (a KernelListeners), the programs count every listener opened since start-up: the first poll
    scans every namespace to find the older ones, and later polls read only those, through a sock_diag socket
    kept in each namespace that still has one (which holds the namespace no longer than its listeners do),
    then sweep the kernel's. Without, every poll scans every namespace (the fallback rung)."""

    def __init__(self, dump=dump_listeners, spaces=network_namespaces, holders=None, process_of=None, kernel=None):
        cgroup2 = cgroups.cgroup2_mount()
        self.dump = dump
        self.spaces = spaces
        self.holders = holders or (lambda inodes: seed.socket_holders(inodes)[0])
        self.process_of = process_of or (lambda tgid: seed.process(tgid, cgroup2))
        self.kernel = kernel
        self.seen = {}      # (netns, cookie) -> [last drops, Owner or None]
        self.first = True
        self.own_netns = os.stat("/proc/self/ns/net").st_ino
        self.failures = 0
        self.warned = None  # the last failure of our own namespace's dump that was logged
        self.older = {}     # with kernel: netns -> cookies of its listeners older than errnomon, still open
        self.held = {}      # with kernel: netns -> a sock_diag socket of it, for reading its older listeners

    def _read(self, netns, pids):
        """The listeners of one namespace: through its held sock_diag socket, else from the calling thread, which
        it moves into that namespace (through the first of its processes that still exists) unless it is ours.
        The first poll beside the programs keeps a socket of each namespace for the next polls."""
        ds = self.held.get(netns)
        if ds is not None:
            return listeners_in(ds)
        if netns != self.own_netns:
            _enter(netns, pids)
        if self.kernel is None or not self.first:
            return self.dump()
        ds = open_diag()
        try:
            listeners = listeners_in(ds)
        except BaseException:
            ds.close()
            raise
        self.held[netns] = ds
        return listeners

    def _dump_all(self, spaces):
        """{netns: [Listener] or the exception reading it raised}. Our own namespace and held ones are read here;
        the others from one throwaway thread, which setns moves from one to the next (it changes the calling
        thread only, so the daemon stays where it is)."""
        out = {}

        def read(items):
            for netns, pids in items:
                try:
                    out[netns] = self._read(netns, pids)
                except Exception as e:  # noqa: BLE001 - reported by poll(), never fatal
                    out[netns] = e
        here = [(n, p) for n, p in spaces.items() if n == self.own_netns or n in self.held]
        read(here)
        others = [(n, p) for n, p in spaces.items() if n != self.own_netns and n not in self.held]
        if others:
            t = threading.Thread(target=read, args=(others,), name="listen-netns", daemon=True)
            t.start()
            t.join()
        return out

    def _release(self, netns):
        self.older.pop(netns, None)
        ds = self.held.pop(netns, None)
        if ds is not None:
            ds.close()

    def _owners(self, listeners):
        """{inode: Process or None} of listeners seen for the first time: one scan of /proc for all."""
        if not listeners:
            return {}
        held = self.holders({l.inode for l in listeners})
        return {l.inode: self.process_of(seed.pick_holder(held[l.inode])) if l.inode in held else None
                for l in listeners}

    def _warn(self, e):
        """Our own namespace always exists and may always be read: its dump failing is a fault (pyroute2
        missing or decoding differently, sock_diag refused) that would leave listen_drops empty for good.
        One line per distinct error, not one per poll."""
        text = "%s: %s" % (type(e).__name__, e)
        if text != self.warned:
            self.warned = text
            log.warning("listen queues not read (%s): listen drops are not counted while this lasts", text)

    def poll(self):
        """[(Event, increase)] since the last poll, from sock_diag; the kernel's own are counted by the sweep."""
        if self.kernel is None or self.first:
            spaces = self.spaces()
        else:
            spaces = {netns: () for netns in self.older}
        events, current, ports = [], {}, {}
        dumps = self._dump_all(spaces)
        for netns, pids in spaces.items():
            listeners = dumps.get(netns, RuntimeError("not read"))
            if isinstance(listeners, Exception):  # one namespace failing must not stop the others
                e = listeners
                self.failures += 1
                if netns == self.own_netns:
                    self._warn(e)
                else:  # e.g. its last process exited meanwhile
                    log.debug("listen queues of netns %d not read: %s", netns, e)
                # keep its listeners' last values: seen again, they must not count their history anew
                current.update((k, v) for k, v in self.seen.items() if k[0] == netns)
                continue
            if self.kernel is not None:
                if not self.first:  # only the older listeners: the programs count the others
                    listeners = [l for l in listeners if l.cookie in self.older.get(netns, ())]
                self.older[netns] = {l.cookie for l in listeners}
                if not listeners:
                    self._release(netns)
            owners = self._owners([l for l in listeners if (netns, l.cookie) not in self.seen])
            for l in listeners:
                key = (netns, l.cookie)
                ports[key] = l.port
                entry = self.seen.get(key)
                if entry is None:
                    entry = [l.drops if self.first else 0, owners[l.inode]]
                current[key] = entry
                owner = entry[1]
                if l.drops > entry[0]:
                    events.append((self._event(owner, l.port), l.drops - entry[0]))
                entry[0] = l.drops
        if self.kernel is not None:
            self.kernel.sweep()
            if self.first:
                # opened after the programs were attached and before the scan: the programs count them
                followed = self.kernel.cookies()
                for netns in list(self.older):
                    self.older[netns] -= followed
                    if not self.older[netns]:
                        self._release(netns)
                current = {k: v for k, v in current.items() if k[1] not in followed}
                current = self._adopt(spaces, current, ports)
        self.seen = current
        self.first = False
        return events

    def _adopt(self, spaces, current, ports):
        """Hand the older listeners to the programs (KernelListeners.adopt), one network namespace at a time:
        ours from this thread, the others from a throwaway one that setns moves from one to the next. Returns
        current without the adopted ones; the rest stay polled through their namespace's sock_diag socket."""
        if self.kernel is None or getattr(self.kernel, "adopt_fd", None) is None or not self.older:
            return current
        adopted = {}

        def values(netns):
            out = {}
            for cookie in self.older.get(netns, ()):
                drops, owner = current[(netns, cookie)]
                o = abi.Owner(port=ports[(netns, cookie)])
                if owner is not None:
                    o.tgid, o.cgroup, o.comm = owner.tgid, owner.cgroup, owner.comm
                out[cookie] = abi.ListenSock(owner=o, drops=drops, cookie=cookie)
            return out

        def run(namespaces):
            for netns in namespaces:
                try:
                    adopted[netns] = self.kernel.adopt(values(netns), None if netns == self.own_netns else
                                                       (lambda n=netns: _enter(n, spaces.get(n, ()))))
                except Exception as e:  # noqa: BLE001 - those listeners stay polled
                    log.debug("older listeners of netns %d not adopted: %s", netns, e)
        run([n for n in self.older if n == self.own_netns])
        others = [n for n in self.older if n != self.own_netns]
        if others:
            t = threading.Thread(target=run, args=(others,), name="listen-adopt", daemon=True)
            t.start()
            t.join()
        for netns, cookies in adopted.items():
            self.older[netns] -= cookies
            current = {k: v for k, v in current.items() if not (k[0] == netns and k[1] in cookies)}
            if not self.older[netns]:
                self._release(netns)
        n = sum(len(c) for c in adopted.values())
        if n:
            log.info("%d listeners older than errnomon handed to the programs (tcp iterator); %d left to polling",
                     n, sum(len(c) for c in self.older.values()))
        return current

    @staticmethod
    def _event(owner, port):
        return Event(metric="listen_drops", errno=None, op=None,
                     comm=owner.comm.decode("utf-8", "replace") if owner else "", remote=None, port=port,
                     state=None, reason=None, action=None, pid=owner.tgid if owner else 0,
                     cgroup=owner.cgroup if owner else 0)
