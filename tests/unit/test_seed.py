"""monitor/seed.py: existing sockets -> owner records. Fake /proc trees, recorded inet_diag messages, and
a real dump of sockets this test opens (sock_diag needs no privilege)."""

import os
import socket
import struct

import pytest

from monitor import cgroups, seed

from .sock_diag import CAPTURES, IDS, load, replay

V4 = socket.AF_INET
V6 = socket.AF_INET6
LO4 = socket.inet_pton(V4, "127.0.0.1") + bytes(12)
LO6 = socket.inet_pton(V6, "::1")
PEER4 = socket.inet_pton(V4, "10.1.2.3") + bytes(12)
EPHEMERAL = (32768, 60999)


# ---- recorded inet_diag messages (Linux 6.18, captured from pyroute2's DiagSocket) ----------------------

RECORDED = [
    # 127.0.0.1:38644 -> 127.0.0.1:47303, ESTABLISHED
    ("7c00000014000200ff0000001e4b00000201000096f4b8c77f0000010000000000000000000000007f00000100000000000000"
     "0000000000000000003e0803000000000000000000000000000000000000000000ac3e0800050008000000000008000f00000000"
     "000c00150001000000000000000600160052000000",
     seed.TcpSocket(V4, 1, 38644, 47303, LO4, LO4, 198718, 540332)),
    # [::1]:40496 -> [::1]:59391, ESTABLISHED
    ("7c00000014000200000100001e4b00000a0100009e30e7ff0000000000000000000000000000000100000000000000000000000000"
     "00000100000000430803000000000000000000000000000000000000000000ae3e0800050008000000000008000f00000000000c"
     "00150001000000000000000600160012000000",
     seed.TcpSocket(V6, 1, 40496, 59391, LO6, LO6, 198723, 540334)),
]


@pytest.mark.parametrize("hexdata, expected", RECORDED, ids=["ipv4", "ipv6"])
def test_recorded_diag_messages(hexdata, expected):
    _, message_class = seed._diag_classes()
    msg = message_class(bytes.fromhex(hexdata))
    msg.decode()
    assert msg["header"]["type"] == 20  # SOCK_DIAG_BY_FAMILY
    assert msg["tcp_socket"] == expected
    assert seed.from_diag(bytes.fromhex(hexdata), 16) == expected   # after the netlink header
    assert seed.INET_DIAG_MSG.size == 72  # sizeof(struct inet_diag_msg)


# ---- real dumps from every kernel of the matrix, decoded by the installed pyroute2 --------------------------

def test_captures_cover_the_kernel_matrix():
    """bullseye 5.10, jammy 5.15, bookworm 6.1, trixie 6.12 (tests/kernels/kernels.txt) and this host's 6.18."""
    kernels = {load(p)["kernel"].split(".")[0] + "." + load(p)["kernel"].split(".")[1] for p in CAPTURES}
    assert {"5.10", "5.15", "6.1", "6.12", "6.18"} <= kernels


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_real_dumps_decode_to_what_proc_and_the_sockets_say(path):
    from pyroute2.netlink.diag import MarshalDiag

    capture = load(path)["sockets"]
    marshal = seed.lean_marshal(MarshalDiag(), seed._diag_classes()[1])
    decoded = seed.tcp_sockets(replay(capture["dump"], marshal))
    assert decoded and all(s.cookie for s in decoded)  # the dump makes every socket's cookie
    # cookies are known (SO_COOKIE) for the sockets with a file: the kernel-only ones are compared without
    got = sorted((s if s.inode else s._replace(cookie=None) for s in decoded), key=repr)
    expected = sorted((seed.TcpSocket(t["family"], t["state"], t["sport"], t["dport"], bytes.fromhex(t["src"]),
                                      bytes.fromhex(t["dst"]), t["cookie"], t["inode"])
                       for t in capture["truth"]), key=repr)
    assert got == expected
    states = {s.state for s in decoded}
    assert {seed.TCP_LISTEN, seed.TCP_ESTABLISHED, seed.TCP_TIME_WAIT} <= states and len(states) >= 5


# ---- fake /proc -------------------------------------------------------------------------------------------

def fake_process(proc, tgid, comm, sockets=(), cgroup="/", start=100, fd_dir=True):
    d = proc / str(tgid)
    d.mkdir()
    (d / "comm").write_text(comm + "\n")
    (d / "cgroup").write_text("1:name=systemd:/x\n0::%s\n" % cgroup)
    # field 2 (comm) may hold spaces and parentheses; start time is field 22
    (d / "stat").write_text("%d (%s) S 1 %d %d 0 -1 4194560 %s %d 0 0 0\n"
                            % (tgid, comm, tgid, tgid, " ".join(["0"] * 12), start))
    if fd_dir:
        (d / "fd").mkdir()
        for i, inode in enumerate(sockets):
            os.symlink("socket:[%d]" % inode, d / "fd" / str(i + 3))
        os.symlink("/dev/null", d / "fd" / "0")
        os.symlink("pipe:[99]", d / "fd" / "1")


@pytest.fixture
def proc(tmp_path):
    p = tmp_path / "proc"
    p.mkdir()
    (p / "self").mkdir()  # not a pid
    return p


def test_start_time_reads_field_22_after_the_comm(proc):
    fake_process(proc, 7, "a) b (c", start=12345)
    assert seed.start_time(7, str(proc)) == 12345
    assert seed.start_time(8, str(proc)) is None


def test_socket_holders(proc):
    fake_process(proc, 10, "srv", sockets=[1001, 1002, 5555])
    fake_process(proc, 11, "worker", sockets=[1001])
    fake_process(proc, 12, "other", sockets=[7777])
    holders, denied = seed.socket_holders({1001, 1002, 7777}, str(proc))
    assert {k: sorted(v) for k, v in holders.items()} == {1001: [10, 11], 1002: [10], 7777: [12]}
    assert denied == 0


def test_socket_holders_tolerates_vanishing_and_denied(proc, monkeypatch):
    fake_process(proc, 10, "srv", sockets=[1001])
    fake_process(proc, 11, "gone", fd_dir=False)          # exited between listing /proc and its fd/
    fake_process(proc, 12, "secret", sockets=[1002])       # another user's: fd/ unreadable
    fake_process(proc, 13, "racy", sockets=[1003, 1004])   # closes an fd between listing and readlink
    fake_process(proc, 14, "other", sockets=[1005])        # fd/ listed (CAP_DAC_READ_SEARCH), links not
    real_scandir, real_readlink = os.scandir, os.readlink

    def scandir(path):
        if str(path).endswith("/12/fd"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def readlink(path):
        if str(path).endswith("/13/fd/3"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        if "/14/fd/" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_readlink(path)

    monkeypatch.setattr(seed.os, "scandir", scandir)
    monkeypatch.setattr(seed.os, "readlink", readlink)
    holders, denied = seed.socket_holders({1001, 1002, 1003, 1004, 1005}, str(proc))
    assert holders == {1001: [10], 1004: [13]}
    assert denied == 2


def test_process_comm_and_cgroup(proc, tmp_path):
    cg2 = tmp_path / "unified"
    (cg2 / "system.slice" / "db.service").mkdir(parents=True)
    fake_process(proc, 10, "postgres-with-a-long-name", cgroup="/system.slice/db.service")
    fake_process(proc, 11, "inroot", cgroup="/")
    fake_process(proc, 12, "moved", cgroup="/removed.scope")
    want = os.stat(cg2 / "system.slice" / "db.service").st_ino
    assert seed.process(10, str(cg2), str(proc)) == seed.Process(10, b"postgres-with-a", want)
    assert seed.process(11, str(cg2), str(proc)) == seed.Process(11, b"inroot", os.stat(cg2).st_ino)
    assert seed.process(12, str(cg2), str(proc)) == seed.Process(12, b"moved", 0)
    assert seed.process(10, None, str(proc)).cgroup == 0   # no cgroup2 mount
    assert seed.process(99, str(cg2), str(proc)) is None   # exited


@pytest.mark.parametrize("starts, expected", [
    ({20: 500}, 20),
    ({20: 500, 21: 400}, 21),             # the oldest: it created the socket and forked
    ({21: 400, 20: 400}, 20),             # same tick: the lowest pid
    ({20: 500, 21: None}, 20),            # 21 exited meanwhile
], ids=["one", "oldest", "tie", "vanished"])
def test_pick_holder(proc, starts, expected):
    for tgid, start in starts.items():
        if start is not None:
            fake_process(proc, tgid, "p", start=start)
    assert seed.pick_holder(list(starts), str(proc)) == expected


def test_cgroup2_mount_on_hybrid_and_unified_hosts(tmp_path):
    hybrid = tmp_path / "hybrid"
    hybrid.write_text(
        "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n"
        "31 25 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n"
        "42 31 0:39 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n")
    unified = tmp_path / "unified"
    unified.write_text("30 1 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
                       "90 30 0:27 /sub /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n")
    bind_first = tmp_path / "bind"
    bind_first.write_text("90 30 0:27 /sub /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n"
                          "91 30 0:27 / /mnt/all\\040cg rw - cgroup2 cgroup2 rw\n")
    none = tmp_path / "v1only"
    none.write_text("42 31 0:39 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n")
    assert cgroups.cgroup2_mount(str(hybrid)) == "/sys/fs/cgroup/unified"
    assert cgroups.cgroup2_mount(str(unified)) == "/sys/fs/cgroup"
    assert cgroups.cgroup2_mount(str(bind_first)) == "/mnt/all cg"  # a mount of a subtree is not the root
    assert cgroups.cgroup2_mount(str(none)) is None
    assert cgroups.cgroup2_mount(str(tmp_path / "missing")) is None


# ---- plan: sockets + holders -> owners and listeners --------------------------------------------------------

P = {
    10: seed.Process(10, b"postgres", 501),
    11: seed.Process(11, b"postgres", 501),
    12: seed.Process(12, b"pgbouncer", 502),
    20: seed.Process(20, b"app", 600),
}


def sock(state, sport, dport, cookie, inode, family=V4, dst=PEER4):
    return seed.TcpSocket(family, state, sport, dport, LO4 if family == V4 else LO6, dst, cookie, inode)


def owner(tgid, comm, cgroup, port, flags, family=V4, remote=PEER4):
    return (tgid, comm, cgroup, port, flags, family, remote)


def as_tuple(o):
    return (o.tgid, o.comm, o.cgroup, o.port, o.flags, o.family, bytes(o.remote))


LISTEN, ESTABLISHED, SYN_SENT, CLOSE_WAIT, FIN_WAIT1 = 10, 1, 2, 8, 4
# owners past their handshake are marked established, as the programs mark them on entering ESTABLISHED
CONN = seed.OWNER_CONNECTED | seed.OWNER_ESTABLISHED
ACC = seed.OWNER_ACCEPTED | seed.OWNER_ESTABLISHED
AMB = seed.OWNER_AMBIGUOUS

PLANS = [
    ("connected", [sock(ESTABLISHED, 45000, 5432, 1, 100)], {100: 20},
     {1: owner(20, b"app", 600, 5432, CONN)}, {}),
    ("connecting: not established yet", [sock(SYN_SENT, 45001, 443, 1, 100)], {100: 20},
     {1: owner(20, b"app", 600, 443, seed.OWNER_CONNECTED)}, {}),
    ("connected between two ephemeral ports", [sock(ESTABLISHED, 45000, 40001, 1, 100)], {100: 20},
     {1: owner(20, b"app", 600, 40001, CONN)}, {}),
    ("accepted child of a listener", [sock(LISTEN, 5432, 0, 1, 200, dst=bytes(16)),
                                      sock(ESTABLISHED, 5432, 45000, 2, 201)], {200: 10, 201: 11},
     {2: owner(11, b"postgres", 501, 5432, ACC)}, {5432: (owner(10, b"postgres", 501, 0, 0, 0, bytes(16)), 1)}),
    ("child not accepted yet belongs to the listener", [sock(LISTEN, 5432, 0, 1, 200, dst=bytes(16)),
                                                        sock(ESTABLISHED, 5432, 45000, 2, 0)], {200: 10},
     {2: owner(10, b"postgres", 501, 5432, ACC)}, {5432: (owner(10, b"postgres", 501, 0, 0, 0, bytes(16)), 1)}),
    ("listener gone: the local port is the service", [sock(CLOSE_WAIT, 8080, 45000, 1, 100)], {100: 20},
     {1: owner(20, b"app", 600, 8080, ACC)}, {}),
    ("holder unknown: port and remote still", [sock(ESTABLISHED, 45000, 6379, 1, 100)], {},
     {1: owner(0, b"", 0, 6379, CONN)}, {}),
    ("orphaned (closed by its program)", [sock(FIN_WAIT1, 45000, 6379, 1, 0)], {},
     {1: owner(0, b"", 0, 6379, CONN)}, {}),
    ("one process, two listeners (IPv4 and IPv6)", [sock(LISTEN, 80, 0, 1, 200, dst=bytes(16)),
                                                    sock(LISTEN, 80, 0, 2, 201, V6, dst=bytes(16))],
     {200: 12, 201: 12}, {}, {80: (owner(12, b"pgbouncer", 502, 0, 0, 0, bytes(16)), 2)}),
    ("SO_REUSEPORT, same program", [sock(LISTEN, 5432, 0, 1, 200, dst=bytes(16)),
                                    sock(LISTEN, 5432, 0, 2, 201, dst=bytes(16))], {200: 10, 201: 11},
     {}, {5432: (owner(0, b"postgres", 501, 0, 0, 0, bytes(16)), 2)}),
    ("SO_REUSEPORT, two programs: ambiguous", [sock(LISTEN, 5432, 0, 1, 200, dst=bytes(16)),
                                               sock(LISTEN, 5432, 0, 2, 201, dst=bytes(16)),
                                               sock(ESTABLISHED, 5432, 45000, 3, 0, V6, dst=LO6)],
     {200: 10, 201: 12}, {3: owner(0, b"", 0, 5432, ACC | AMB, V6, LO6)},
     {5432: (owner(0, b"", 0, 0, AMB, 0, bytes(16)), 2)}),
    ("listener nobody holds still marks its port", [sock(LISTEN, 2049, 0, 1, 0, dst=bytes(16))], {}, {},
     {2049: (owner(0, b"", 0, 0, 0, 0, bytes(16)), 1)}),
    ("minisockets, unconnected and cookie-less sockets are skipped",
     [sock(6, 5432, 45000, 1, 0), sock(3, 5432, 45001, 2, 0), sock(7, 45002, 0, 3, 100),
      sock(ESTABLISHED, 45003, 80, 0, 101)], {100: 20, 101: 20}, {}, {}),
    ("IPv6 remote", [sock(ESTABLISHED, 45000, 443, 1, 100, V6, dst=LO6)], {100: 20},
     {1: owner(20, b"app", 600, 443, CONN, V6, LO6)}, {}),
]


@pytest.mark.parametrize("sockets, holders, owners, listeners", [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan(sockets, holders, owners, listeners):
    got_owners, got_listeners = seed.plan(sockets, holders.get, P.get, EPHEMERAL)
    assert {c: as_tuple(o) for c, o in got_owners.items()} == owners
    assert {p: (as_tuple(rec.owner), rec.count) for p, rec in got_listeners.items()} == listeners


def test_dump_failure_is_one_seed_error(monkeypatch):
    class Refused:
        def __init__(self):
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(seed, "_diag_classes", lambda: (Refused, None))
    with pytest.raises(seed.SeedError, match="listing TCP sockets with sock_diag failed"):
        seed.dump_tcp()


# ---- the real thing: sockets this test opens -----------------------------------------------------------------

SO_COOKIE = getattr(socket, "SO_COOKIE", 57)


def cookie(s):
    return struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


@pytest.mark.parametrize("family, addr", [(V4, "127.0.0.1"), (V6, "::1")], ids=["ipv4", "ipv6"])
def test_real_dump_and_owners(family, addr):
    with socket.socket(family) as ls:
        ls.bind((addr, 0))
        ls.listen()
        port = ls.getsockname()[1]
        with socket.create_connection((addr, port)) as cli, socket.socket(family) as pending:
            srv, _ = ls.accept()
            pending.connect((addr, port))   # completed by the kernel, never accept()ed: inode 0
            with srv:
                by_inode = {s.inode: s for s in seed.dump_tcp() if s.inode}
                sockets, owners, listeners, denied = seed.existing_owners(EPHEMERAL)
                raw = socket.inet_pton(family, addr).ljust(16, b"\0")
                c = by_inode[os.fstat(cli.fileno()).st_ino]
                assert c == seed.TcpSocket(family, seed.TCP_ESTABLISHED, cli.getsockname()[1], port, raw, raw,
                                           cookie(cli), os.fstat(cli.fileno()).st_ino)
                s = by_inode[os.fstat(srv.fileno()).st_ino]
                assert (s.state, s.sport, s.dport, s.cookie) == (seed.TCP_ESTABLISHED, port, cli.getsockname()[1],
                                                                 cookie(srv))
                listener = by_inode[os.fstat(ls.fileno()).st_ino]
                assert (listener.state, listener.sport, listener.cookie) == (seed.TCP_LISTEN, port, cookie(ls))

                with open("/proc/self/comm", "rb") as f:
                    me = f.read().strip()
                cg2 = cgroups.cgroup2_mount()
                my_cgroup = seed.cgroup_id(os.getpid(), cg2)
                assert cg2 and my_cgroup
                assert as_tuple(owners[cookie(cli)]) == owner(os.getpid(), me, my_cgroup, port, CONN, family, raw)
                assert as_tuple(owners[cookie(srv)]) == owner(os.getpid(), me, my_cgroup, port, ACC, family, raw)
                # the accept queue's child: not in any fd table, the listener's
                queued = [o for ck, o in owners.items()
                          if o.port == port and ck not in (cookie(cli), cookie(srv)) and o.flags == ACC]
                assert [as_tuple(o) for o in queued] == [owner(os.getpid(), me, my_cgroup, port, ACC, family, raw)]
                assert as_tuple(listeners[port].owner) == owner(os.getpid(), me, my_cgroup, 0, 0, 0, bytes(16))
                assert listeners[port].count == 1


# ---- start-up: never fatal -------------------------------------------------------------------------------------

class FakePrograms:
    seeded_fd, listeners_fd, ephemeral = -1, -1, (32768, 60999)


def start_daemon_seeding(monkeypatch, caplog, outcome):
    from monitor import daemon as daemon_mod

    def fake_seed(seeded_fd, listeners_fd, ephemeral):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(seed, "seed", fake_seed)
    d = daemon_mod.Daemon.__new__(daemon_mod.Daemon)
    d.programs = FakePrograms()
    d.config = type("Config", (), {"max_sockets": 100})()
    d.tables = (100, 100)
    with caplog.at_level("INFO"):
        d.seed_owners()
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "errnomon"]


def test_seeding_failure_is_one_warning(monkeypatch, caplog):
    logged = start_daemon_seeding(monkeypatch, caplog, seed.SeedError("listing TCP sockets with sock_diag failed "
                                                                      "([Errno 1] Operation not permitted)"))
    assert [lvl for lvl, _ in logged] == ["INFO", "WARNING"]  # status line, then the one warning
    assert "Operation not permitted" in logged[1][1] and "carry no process" in logged[1][1]


def test_seeding_result_is_logged_and_unreadable_processes_warned(monkeypatch, caplog):
    logged = start_daemon_seeding(monkeypatch, caplog, seed.Result(sockets=130, owners=120, attributed=90,
                                                                   listeners=3, denied=2, seconds=0.25))
    assert logged[1] == ("INFO", "seeded 120 of 130 existing TCP sockets (90 with their process) and 3 listening "
                                 "ports in 0.25s")
    assert [lvl for lvl, _ in logged[2:]] == ["WARNING", "WARNING"]
    assert "seeded owner table holds 100 (kernel.max_sockets 100)" in logged[2][1] and "fd tables of 2 processes" in logged[3][1]


def test_plan_without_the_ephemeral_range():
    """(0, 0): net.ipv4.ip_local_port_range unreadable; a socket with no local listener is taken as connected."""
    owners, _ = seed.plan([sock(CLOSE_WAIT, 8080, 45000, 1, 100)], {100: 20}.get, P.get, (0, 0))
    assert as_tuple(owners[1]) == owner(20, b"app", 600, 45000, CONN)


def test_tcp_sockets_allocated_counts_the_whole_host(tmp_path):
    path = tmp_path / "sockstat"
    path.write_text("sockets: used 9\nTCP: inuse 1 orphan 0 tw 50095 alloc 100004 mem 260\nUDP: inuse 0 mem 0\n")
    assert seed.tcp_sockets_allocated(str(path)) == 100004
    path.write_text("sockets: used 9\n")
    assert seed.tcp_sockets_allocated(str(path)) is None
    assert seed.tcp_sockets_allocated(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("configured, sockets, tables", [
    (0, None, (65536, 1024)),          # auto, nothing known: the least
    (0, 1000, (65536, 2274)),
    (0, 100004, (200704, 126029)),     # twice the sockets, rounded up to 1024; seeded: a quarter more
    (0, 3000000, (4194304, 3751024)),  # the most
    (1024, 100004, (1024, 1024)),      # as configured: the seeded table never above it
    (262144, 100004, (262144, 126029)),
])
def test_table_sizes(configured, sockets, tables):
    assert seed.table_sizes(configured, sockets) == tables
