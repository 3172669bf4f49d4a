"""Listen-queue overflow per listener, from the kernel's own drop counter of each listening socket.

When a listener's accept queue (or its SYN queue, without syncookies) is full, Linux drops the SYN or the
final ACK silently and increments the listener's sk_drops along with the host-wide ListenDrops. No
tracepoint fires there, so this polls the counter instead: a sock_diag dump of the LISTEN sockets with
INET_DIAG_SKMEMINFO in every network namespace that has processes, a few times a minute. The counter is
cumulative, so polling loses nothing; it only delays the count by one poll.

Data flow: poll() -> decode.Event(metric="listen_drops") increments for the aggregator, like a drain.
"""

import ctypes
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass

from . import cgroups, seed
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


def dump_listeners():
    """Every TCP listener (IPv4 and IPv6) in the calling thread's network namespace."""
    from pyroute2.netlink.diag import DiagSocket  # netlink by a well-kept library; imported on first poll

    out = []
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            out += listeners_of(ds.get_sock_stats(family=family, states=1 << TCP_LISTEN,
                                                  extensions=1 << (INET_DIAG_SKMEMINFO - 1)))
    return out


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


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


class ListenQueues:
    """Polls every listener's drop counter; turns increases into listen_drops events.

    A listener seen at the first poll starts from the value it had then (drops before errnomon started are
    not ours to report); one that appears later counts from zero. Its owner is the process holding its
    inode, looked up once per listener the way seeding does it (monitor/seed.py: the oldest holder)."""

    def __init__(self, dump=dump_listeners, spaces=network_namespaces, holders=None, process_of=None):
        cgroup2 = cgroups.cgroup2_mount()
        self.dump = dump
        self.spaces = spaces
        self.holders = holders or (lambda inodes: seed.socket_holders(inodes)[0])
        self.process_of = process_of or (lambda tgid: seed.process(tgid, cgroup2))
        self.seen = {}      # (netns, cookie) -> [last drops, Owner or None]
        self.first = True
        self.own_netns = os.stat("/proc/self/ns/net").st_ino
        self.failures = 0
        self.warned = None  # the last failure of our own namespace's dump that was logged
        self.queues = []    # [(Owner, port, queued, limit)] of the last poll, for gauges

    def _dump_in(self, netns, pids):
        """The listeners of one namespace; entered through the first of its processes that still exists."""
        if netns == self.own_netns:
            return self.dump()
        result, error = [], []

        def run():  # setns changes the calling thread only: a throwaway thread keeps the daemon where it is
            for pid in pids:
                try:
                    fd = os.open("%s/%d/ns/net" % (PROC, pid), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    _setns(fd)
                    result.extend(self.dump())
                    return
                except Exception as e:  # noqa: BLE001 - reported once below, never fatal
                    error.append(e)
                    return
                finally:
                    os.close(fd)
        t = threading.Thread(target=run, name="listen-netns", daemon=True)
        t.start()
        t.join()
        if error:
            raise error[0]
        return result

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
        """[(Event, increase)] since the last poll."""
        events, queues, current = [], [], {}
        for netns, pids in self.spaces().items():
            try:
                listeners = self._dump_in(netns, pids)
            except Exception as e:  # noqa: BLE001 - one namespace failing must not stop the others
                self.failures += 1
                if netns == self.own_netns:
                    self._warn(e)
                else:  # e.g. its last process exited meanwhile
                    log.debug("listen queues of netns %d not read: %s", netns, e)
                # keep its listeners' last values: seen again, they must not count their history anew
                current.update((k, v) for k, v in self.seen.items() if k[0] == netns)
                continue
            owners = self._owners([l for l in listeners if (netns, l.cookie) not in self.seen])
            for l in listeners:
                key = (netns, l.cookie)
                entry = self.seen.get(key)
                if entry is None:
                    entry = [l.drops if self.first else 0, owners[l.inode]]
                current[key] = entry
                owner = entry[1]
                if l.drops > entry[0]:
                    events.append((self._event(owner, l.port), l.drops - entry[0]))
                entry[0] = l.drops
                queues.append((owner, l.port, l.queued, l.limit))
        self.seen = current
        self.first = False
        self.queues = queues
        return events

    @staticmethod
    def _event(owner, port):
        return Event(metric="listen_drops", errno=None, op=None,
                     comm=owner.comm.decode("utf-8", "replace") if owner else "", remote=None, port=port,
                     state=None, reason=None, action=None, pid=owner.tgid if owner else 0,
                     cgroup=owner.cgroup if owner else 0)
