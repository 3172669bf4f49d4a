"""Many established loopback connections, for tests/bpf/test_many_sockets.py: opened before a daemon starts,
reset on command after it did.

    many_connections.py server COMM PORT NPORTS N    accept N connections over ports PORT..PORT+NPORTS-1
    many_connections.py client COMM PORT NPORTS N    open N connections to them, spread over the ports

Each names itself COMM (prctl) first, raises its open-file limit to N plus some (up to the hard limit: the
caller keeps N within it), the server prints "listening" once it listens, and each prints "ready N" once its
N connections are established. Then it reads commands from stdin, one a line:
    reset K    abort K of its connections still open (SO_LINGER {1, 0}, then close: the kernel sends an RST),
               the client from its first ones, the server from its last; prints "reset K PORT:COUNT,..."
    quit       close everything and exit
Bounded: N at most 60000; setting up must finish within 300 s.
"""

import ctypes
import resource
import select
import socket
import struct
import sys
import time

PR_SET_NAME = 15
MOST = 60000


def name(comm):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm.encode()), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def files(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 100:
        raise SystemExit("many_connections: %d connections need more than the hard file limit %d" % (n, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(ports, n, deadline):
    listeners = []
    for p in ports:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", p))
        ls.listen(4096)
        ls.setblocking(False)
        listeners.append(ls)
    print("listening", flush=True)
    conns = []
    poller = select.poll()
    by_fd = {ls.fileno(): ls for ls in listeners}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while len(conns) < n:
        if time.monotonic() > deadline:
            raise SystemExit("many_connections: %d of %d accepted in time" % (len(conns), n))
        for fd, _ in poller.poll(1000):
            ls = by_fd[fd]
            while len(conns) < n:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                conns.append(c)
    for ls in listeners:
        ls.close()
    return conns[::-1]  # the server aborts its last ones first


def connect(ports, n, deadline):
    conns, pending = [], []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", ports[i % len(ports)]))
        pending.append(s)
        if len(pending) >= 512 or i == n - 1:
            poller = select.poll()  # select() cannot watch descriptors above 1023
            by_fd = {s.fileno(): s for s in pending}
            for fd in by_fd:
                poller.register(fd, select.POLLOUT)
            while by_fd:
                if time.monotonic() > deadline:
                    raise SystemExit("many_connections: %d of %d connected in time" % (len(conns), n))
                for fd, _ in poller.poll(1000):
                    s = by_fd.pop(fd)
                    poller.unregister(fd)
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise SystemExit("many_connections: connect failed: errno %d" % err)
                    conns.append(s)
            pending = []
    return conns


def alive(s):
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return info[0] == 1  # TCP_ESTABLISHED


def main():
    role, comm, port, nports, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if not 0 < n <= MOST:
        raise SystemExit("many_connections: N from 1 to %d" % MOST)
    name(comm)
    files(n)
    ports = list(range(port, port + nports))
    deadline = time.monotonic() + 300
    conns = serve(ports, n, deadline) if role == "server" else connect(ports, n, deadline)
    print("ready %d" % len(conns), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["reset"]:
            k, by_port = int(words[1]), {}
            while k and conns:
                s = conns.pop(0)
                if not alive(s):
                    s.close()
                    continue
                p = s.getsockname()[1] if role == "server" else s.getpeername()[1]
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                by_port[p] = by_port.get(p, 0) + 1
                k -= 1
            print("reset %s" % ",".join("%d:%d" % kv for kv in sorted(by_port.items())), flush=True)
        elif words[:1] == ["quit"]:
            break
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
