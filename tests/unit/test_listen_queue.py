"""monitor/listen_queue.py: per-listener drop counters turned into listen_drops increments."""

import struct

import pytest

from monitor import listen_queue
from monitor.listen_queue import Listener, ListenQueues
from monitor.seed import Process

from .sock_diag import CAPTURES, IDS, load, replay


def meminfo(drops):
    """INET_DIAG_SKMEMINFO as pyroute2 renders it: nine u32 in host order, colon-separated hex."""
    raw = struct.pack("=9I", 0, 131072, 0, 16384, 0, 0, 0, 0, drops)
    return ":".join("%02x" % b for b in raw)


@pytest.mark.parametrize("attr, drops", [
    (meminfo(0), 0), (meminfo(12), 12), (meminfo(70000), 70000),
    (None, 0), ("", 0), ("00:01", 0),  # absent or truncated: nothing to report
    (struct.pack("=9I", *range(9)), 8),  # raw bytes
])
def test_skmeminfo_drops(attr, drops):
    assert listen_queue.skmeminfo_drops(attr) == drops


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_real_listen_dumps_decode_to_the_drops_the_kernel_counted(path):
    """A listener whose accept queue overflowed (its drops are the namespace's ListenDrops) and quiet ones,
    IPv4 and IPv6, as the installed pyroute2 decodes the kernel's own bytes."""
    from pyroute2.netlink.diag import MarshalDiag

    capture = load(path)["listeners"]
    got = sorted(listen_queue.listeners_of(replay(capture["dump"], MarshalDiag())), key=repr)
    expected = sorted((Listener(cookie=t["cookie"], inode=t["inode"], port=t["port"], drops=t["drops"],
                                queued=t["queued"], limit=t["limit"]) for t in capture["truth"]), key=repr)
    assert got == expected
    assert sum(l.drops for l in got) == capture["listen_drops"] > 0


class Host:
    """Fake namespaces, listeners and processes."""

    def __init__(self):
        self.listeners = {}   # netns -> [Listener]
        self.pids = {}        # netns -> [pid]
        self.fds = {}         # pid -> {inode}
        self.fail = set()     # netns whose dump raises

    def holders(self, inodes):
        """{inode: [pids holding it]} for the inodes asked about, as seed.socket_holders finds them."""
        self.scans.append(sorted(inodes))
        held = {}
        for pid, fds in sorted(self.fds.items()):
            for inode in fds & set(inodes):
                held.setdefault(inode, []).append(pid)
        return held

    def queues(self):
        self.scans = []
        q = ListenQueues(dump=None, spaces=lambda: dict(self.pids), holders=self.holders,
                         process_of=lambda pid: Process(tgid=pid, comm=b"p%d" % pid, cgroup=pid * 10))
        q.own_netns = -1  # every namespace goes through the reading thread; replace the dump per namespace
        q._read = self._dump_in
        return q

    def _dump_in(self, netns, pids):
        if netns in self.fail:
            raise OSError(1, "setns: Operation not permitted")
        return list(self.listeners.get(netns, []))


def listener(cookie, drops, port=8080, inode=None):
    return Listener(cookie=cookie, inode=inode or cookie + 1000, port=port, drops=drops, queued=0, limit=1)


def increments(events):
    return sorted((e.comm, e.port, e.pid, e.cgroup, n) for e, n in events)


def test_drops_before_the_first_poll_are_not_counted_later_ones_are():
    h = Host()
    h.pids = {1: [10, 11]}
    h.fds = {11: {1001}}
    h.listeners = {1: [listener(1, 5)]}
    q = h.queues()
    assert q.poll() == []
    h.listeners = {1: [listener(1, 9)]}
    assert increments(q.poll()) == [("p11", 8080, 11, 110, 4)]
    assert q.poll() == []  # unchanged counter: nothing new


def test_a_listener_born_after_the_first_poll_counts_from_zero():
    h = Host()
    h.pids = {1: [10]}
    q = h.queues()
    q.poll()
    h.fds = {10: {2001}}
    h.listeners = {1: [listener(1001, 3, port=9000, inode=2001)]}
    assert increments(q.poll()) == [("p10", 9000, 10, 100, 3)]


def test_namespaces_are_kept_apart_and_owners_looked_up_once():
    h = Host()
    h.pids = {1: [10], 2: [20]}
    h.fds = {10: {1001}, 20: {2001}}
    # the same cookie in two namespaces (cookies are per host, but keys must not rely on it)
    h.listeners = {1: [listener(1, 0)], 2: [listener(1, 0, inode=2001)]}
    q = h.queues()
    q.poll()
    h.listeners = {1: [listener(1, 2)], 2: [listener(1, 7, inode=2001)]}
    assert increments(q.poll()) == [("p10", 8080, 10, 100, 2), ("p20", 8080, 20, 200, 7)]
    assert h.scans == [[1001], [2001]]  # one /proc scan per namespace with new listeners, none after


def test_unowned_listener_counts_with_empty_comm():
    h = Host()
    h.pids = {1: [10]}
    h.listeners = {1: [listener(1, 0)]}
    q = h.queues()
    q.poll()
    h.listeners = {1: [listener(1, 1)]}
    assert increments(q.poll()) == [("", 8080, 0, 0, 1)]


def test_a_namespace_failing_once_does_not_recount_its_history():
    h = Host()
    h.pids = {1: [10]}
    h.fds = {10: {1001}}
    h.listeners = {1: [listener(1, 50)]}
    q = h.queues()
    q.poll()
    h.fail = {1}
    assert q.poll() == []
    assert q.failures == 1
    h.fail = set()
    h.listeners = {1: [listener(1, 51)]}
    assert increments(q.poll()) == [("p10", 8080, 10, 100, 1)]


def test_our_own_namespace_failing_is_one_warning_per_distinct_error(caplog):
    h = Host()
    h.pids = {1: [10], 2: [20]}
    q = h.queues()
    q.own_netns = 1
    errors = {1: ImportError("No module named 'pyroute2'"), 2: OSError(3, "setns: No such process")}

    def dump_in(netns, pids):
        raise errors[netns]

    q._read = dump_in
    with caplog.at_level("DEBUG", logger="errnomon.listen"):
        q.poll()
        q.poll()
        errors[1] = KeyError("idiag_state")
        q.poll()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "listen queues not read (ImportError: No module named 'pyroute2'): listen drops are not counted while "
        "this lasts",
        "listen queues not read (KeyError: 'idiag_state'): listen drops are not counted while this lasts"]
    assert q.failures == 6
    assert sum(r.levelname == "DEBUG" for r in caplog.records) == 3  # the other namespace: gone meanwhile


def test_closed_listeners_are_forgotten():
    h = Host()
    h.pids = {1: [10]}
    h.fds = {10: {1001}}
    h.listeners = {1: [listener(1, 4)]}
    q = h.queues()
    q.poll()
    h.listeners = {1: []}
    q.poll()
    assert q.seen == {}


class FakeKernel:
    """KernelListeners as the programs would answer: the cookies of the listeners they follow."""

    def __init__(self, cookies=()):
        self.followed = set(cookies)
        self.sweeps = 0

    def sweep(self):
        self.sweeps += 1
        return len(self.followed)

    def cookies(self):
        return set(self.followed)


def kernel_queues(h, kernel):
    q = h.queues()
    q.kernel = kernel
    h.dumped = []
    read = q._read

    def counting(netns, pids):
        h.dumped.append(netns)
        return read(netns, pids)

    q._read = counting
    h.spaces_calls = 0
    spaces = q.spaces

    def counting_spaces():
        h.spaces_calls += 1
        return spaces()

    q.spaces = counting_spaces
    return q


def test_with_the_kernel_following_listeners_only_older_ones_are_polled_and_only_where_they_are():
    h = Host()
    h.pids = {1: [10], 2: [20], 3: [30]}
    h.fds = {10: {1001}, 20: {2001}}
    h.listeners = {1: [listener(1, 5)], 2: [listener(2, 0, inode=2001)], 3: []}
    k = FakeKernel()
    q = kernel_queues(h, k)
    assert q.poll() == []
    assert h.spaces_calls == 1 and sorted(h.dumped) == [1, 2, 3]
    # later polls: no /proc scan, only the namespaces that have an older listener; listeners opened since
    # start-up are the programs' (never counted here, whatever their drops)
    h.dumped = []
    h.listeners = {1: [listener(1, 7), listener(50, 9)], 2: [listener(2, 3, inode=2001)], 3: [listener(60, 4)]}
    assert increments(q.poll()) == [("p10", 8080, 10, 100, 2), ("p20", 8080, 20, 200, 3)]
    assert h.spaces_calls == 1 and sorted(h.dumped) == [1, 2]
    assert k.sweeps == 2
    # namespace 2's older listener closed: it is read no more
    h.dumped = []
    h.listeners[2] = []
    assert q.poll() == []
    h.dumped = []
    q.poll()
    assert h.dumped == [1] and q.older == {1: {1}}


def test_listeners_the_programs_follow_already_at_start_up_are_left_to_them():
    """Opened between attaching and the start-up scan: both see them; the programs count them."""
    h = Host()
    h.pids = {1: [10]}
    h.fds = {10: {1001, 1002}}
    h.listeners = {1: [listener(1, 0), listener(2, 0, port=9090)]}
    q = kernel_queues(h, FakeKernel(cookies={2}))
    q.poll()
    assert q.older == {1: {1}}
    h.listeners = {1: [listener(1, 1), listener(2, 5, port=9090)]}
    assert increments(q.poll()) == [("p10", 8080, 10, 100, 1)]


def test_without_the_kernel_every_poll_scans_every_namespace():
    h = Host()
    h.pids = {1: [10]}
    h.listeners = {1: [listener(1, 0)]}
    q = kernel_queues(h, None)
    q.poll()
    h.listeners = {1: [listener(1, 0), listener(7, 2)]}
    assert increments(q.poll()) == [("", 8080, 0, 0, 2)]
    assert h.spaces_calls == 2


class AdoptingKernel(FakeKernel):
    """FakeKernel with the tcp iterator: adopt() takes the listeners whose cookies it can find."""

    adopt_fd = 99

    def __init__(self, findable):
        super().__init__()
        self.findable = set(findable)
        self.given = {}

    def adopt(self, listeners, enter=None):
        self.given.update(listeners)
        taken = set(listeners) & self.findable
        self.followed |= taken
        return taken


def test_older_listeners_the_iterator_finds_are_handed_to_the_programs_with_owner_and_baseline():
    h = Host()
    h.pids = {1: [10], 2: [20]}
    h.fds = {10: {1001}, 20: {2001}}
    h.listeners = {1: [listener(1, 5)], 2: [listener(2, 7, port=9090, inode=2001)]}
    k = AdoptingKernel(findable={1})
    q = kernel_queues(h, k)
    assert q.poll() == []
    # both offered, each with its owner, port and the drops already accounted for (counted from there)
    one, two = k.given[1], k.given[2]
    assert (one.owner.tgid, one.owner.comm, one.owner.cgroup, one.owner.port, one.drops, one.cookie) == \
        (10, b"p10", 100, 8080, 5, 1)
    assert (two.owner.tgid, two.owner.port, two.drops) == (20, 9090, 7)
    # the adopted one is the programs' now: its namespace is no longer read; the other stays polled
    assert q.older == {2: {2}}
    h.dumped = []
    h.listeners = {1: [listener(1, 50)], 2: [listener(2, 8, port=9090, inode=2001)]}
    assert increments(q.poll()) == [("p20", 9090, 20, 200, 1)]
    assert h.dumped == [2]
