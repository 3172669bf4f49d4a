#!/usr/bin/env python3
"""Record what a kernel answers to errnomon's two sock_diag dumps, for the decoding tests in tests/unit.

    python3 tests/unit/sock_diag/capture.py OUT.json     (root: it works in a network namespace of its own)

In a kernel-matrix guest, with that guest's kernel: KERNEL_PYTEST_ARGS=tests/unit/sock_diag/capture.py (the
file's one test) writes runs/<name>/linux-<release>.json; copy it here.

No pyroute2 in this file: the requests are packed by hand and every recv() buffer is kept as the kernel
wrote it, so that tests/unit/test_seed.py and test_listen_queue.py can replay the same bytes through
whichever pyroute2 is installed. Beside them, what those sockets are, learned without sock_diag:
/proc/net/tcp and tcp6 (state, addresses, ports, inode), SO_COOKIE of the sockets held here, and the
namespace's ListenDrops counter for the listeners whose accept queue overflowed.

The two dumps are the ones the daemon sends: every TCP socket in every state (monitor/seed.py), and the
listening sockets with INET_DIAG_SKMEMINFO (monitor/listen_queue.py), each for IPv4 and IPv6.
"""

import ctypes
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
INET_DIAG_SKMEMINFO = 7
ALL_STATES = (1 << 12) - 1
SO_COOKIE = getattr(socket, "SO_COOKIE", 57)
FAMILIES = ((socket.AF_INET, "127.0.0.1", "/proc/net/tcp"), (socket.AF_INET6, "::1", "/proc/net/tcp6"))


def new_network_namespace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unshare(CLONE_NEWNET): %s (run as root)" % os.strerror(err))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def dump(family, states, extensions=0):
    """The kernel's answer to one inet_diag dump request: the recv() buffers, hex."""
    request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, extensions, states) + bytes(48)  # id: any
    header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    buffers = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.sendto(header + request, (0, 0))
        while True:
            data = nl.recv(1 << 16)
            buffers.append(data.hex())
            offset, done = 0, False
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                done = done or kind in (NLMSG_DONE, NLMSG_ERROR)
                offset += (length + 3) & ~3
            if done or not data:
                return buffers


def proc_address(text):
    """'0100007F:1F90' (u32 words as the kernel prints them) -> (16 address bytes, port)."""
    words, port = text.split(":")
    raw = b"".join(int(words[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(words), 8))
    return raw.ljust(16, b"\0"), int(port, 16)


def proc_sockets():
    """Every TCP socket of this namespace as /proc/net/tcp and tcp6 list them."""
    rows = []
    for family, _, path in FAMILIES:
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                (src, sport), (dst, dport) = proc_address(fields[1]), proc_address(fields[2])
                rows.append({"family": family, "state": int(fields[3], 16), "sport": sport, "dport": dport,
                             "src": src.hex(), "dst": dst.hex(), "inode": int(fields[9]),
                             "rx_queue": int(fields[4].split(":")[1], 16)})  # a listener's: its accept queue
    return sorted(rows, key=lambda r: sorted(r.items()))


def listen_drops():
    """The namespace's TcpExt ListenDrops (every listener's sk_drops add to it)."""
    with open("/proc/net/netstat") as f:
        lines = [l.split() for l in f if l.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["ListenDrops"])


def cookie(s):
    return struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


def connections(family, addr, held, backlogs):
    """A listener and its connections in as many states as a quiet host shows: established both ways, a
    child never accept()ed (no inode), half-closed (FIN_WAIT2 / CLOSE_WAIT) and TIME_WAIT (no inode)."""
    ls = socket.socket(family)
    ls.bind((addr, 0))
    ls.listen(8)
    backlogs[os.fstat(ls.fileno()).st_ino] = 8
    port = ls.getsockname()[1]
    cli = socket.create_connection((addr, port))
    srv, _ = ls.accept()
    half = socket.create_connection((addr, port))
    half_srv, _ = ls.accept()
    half.shutdown(socket.SHUT_WR)
    closing = socket.create_connection((addr, port))
    closing_srv, _ = ls.accept()
    closing.close()          # FIN_WAIT2 ...
    time.sleep(0.1)
    closing_srv.close()      # ... and TIME_WAIT once the peer's FIN is in
    pending = socket.create_connection((addr, port))  # accept() takes the queue in order: this one last
    held += [ls, cli, srv, pending, half, half_srv]


def overflow(family, addr, held, backlogs, backlog=1, attempts=5):
    """A listener whose accept queue fills: connects beyond it are dropped (its sk_drops, counted in the
    namespace's ListenDrops). Returns its inode, drops and the connections its queue holds."""
    before = listen_drops()
    ls = socket.socket(family)
    ls.bind((addr, 0))
    ls.listen(backlog)
    backlogs[os.fstat(ls.fileno()).st_ino] = backlog
    port = ls.getsockname()[1]
    clients = []
    for _ in range(attempts):
        c = socket.socket(family)
        c.setblocking(False)
        c.connect_ex((addr, port))
        clients.append(c)
    time.sleep(0.2)
    queued = 0
    for c in clients:
        try:
            c.getpeername()
            queued += 1
            held.append(c)
        except OSError:  # its SYN was dropped: closed before it is sent again (1 s later)
            c.close()
    held.append(ls)
    return {"inode": os.fstat(ls.fileno()).st_ino, "drops": listen_drops() - before, "queued": queued}


def capture():
    new_network_namespace()
    held, overflowing, backlogs = [], [], {}
    for family, addr, _ in FAMILIES:
        connections(family, addr, held, backlogs)
        overflowing.append(overflow(family, addr, held, backlogs))
    cookies = {os.fstat(s.fileno()).st_ino: cookie(s) for s in held}
    for attempt in range(5):
        before, drops = proc_sockets(), listen_drops()
        sockets = {family: dump(family, ALL_STATES) for family, _, _ in FAMILIES}
        listeners = {family: dump(family, 1 << TCP_LISTEN, 1 << (INET_DIAG_SKMEMINFO - 1))
                     for family, _, _ in FAMILIES}
        if proc_sockets() == before and listen_drops() == drops:
            break
        time.sleep(1)  # a socket changed state meanwhile (a timer): again
    else:
        raise RuntimeError("the sockets kept changing while they were dumped")
    if sum(l["drops"] for l in overflowing) != drops or not all(l["drops"] for l in overflowing):
        raise RuntimeError("ListenDrops %d is not the overflowing listeners' %s" % (drops, overflowing))
    truth, listening = [], []
    drops_of = {l["inode"]: l["drops"] for l in overflowing}
    for row in before:
        row["cookie"] = cookies.get(row["inode"]) if row["inode"] else None  # None: held by no fd here
        queued = row.pop("rx_queue")
        truth.append(row)
        if row["state"] == TCP_LISTEN:
            listening.append({"family": row["family"], "port": row["sport"], "cookie": row["cookie"],
                              "inode": row["inode"], "drops": drops_of.get(row["inode"], 0), "queued": queued,
                              "limit": backlogs[row["inode"]]})
    if sorted((l["inode"], l["queued"]) for l in overflowing) != sorted(
            (l["inode"], l["queued"]) for l in listening if l["inode"] in drops_of):
        raise RuntimeError("accept queues in /proc/net/tcp differ from the connections made: %s" % listening)
    for s in held:
        s.close()
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "captured_by": "tests/unit/sock_diag/capture.py",
        "sockets": {"dump": {str(f): b for f, b in sockets.items()}, "truth": truth},
        "listeners": {"dump": {str(f): b for f, b in listeners.items()}, "truth": listening,
                      "listen_drops": drops},
    }


def main(argv):
    if len(argv) != 1:
        sys.stderr.write("usage: capture.py OUT.json\n")
        return 2
    record = capture()
    with open(argv[0], "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    print("%s: %d sockets, %d listeners (kernel %s)" % (argv[0], len(record["sockets"]["truth"]),
                                                        len(record["listeners"]["truth"]), record["kernel"]))
    return 0


def test_capture_in_guest():
    """Only when named on pytest's command line inside a kernel-matrix guest (not a test_*.py file): the
    capture runs in a child process, whose network namespace is its own, into the guest's results share."""
    assert os.path.isdir("/mnt/out") and os.getuid() == 0, \
        "run this only inside a kernel-matrix guest, as root (it writes to the results share /mnt/out)"
    out = "/mnt/out/linux-%s.json" % platform.release()
    subprocess.run([sys.executable, os.path.abspath(__file__), out], check=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
