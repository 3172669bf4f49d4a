"""A listener with a full accept queue, run inside a network namespace by tests/bpf/test_listen_drops.py.

    listen_flood.py COMM FAMILY(4|6) PORT STEP...

Names itself COMM (prctl) before it opens a socket, then runs the steps in order:
    listen     bind [::1]:PORT or 127.0.0.1:PORT, listen(1) (an accept queue of two), never accept
    burst:N    N non-blocking connects to it; 0.3 s later the ones still in SYN_SENT are closed (no more
               SYN retransmissions), the two that reached the queue stay open and keep it full
    sleep:S    sleep S seconds
    report     print one JSON line: the listener's own drop counter as `ss -ltnm` shows it (d<N>; null once closed), the
               namespace's ListenDrops and ListenOverflows, seconds since listen, the pid
    pause      print {"paused": true} and wait for a line on stdin
    close      close the listener
The ground truth of the tests is what this prints: the kernel's own counters, never errnomon's.
Bounded: at most 64 connects a burst; every step ends by itself, a pause within 60 s.
"""

import ctypes
import json
import os
import re
import select
import socket
import subprocess
import sys
import time

PR_SET_NAME = 15
MOST = 64


def netstat():
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    counters = {}
    for names, values in zip(lines[0::2], lines[1::2]):
        counters.update(zip(names.split()[1:], map(int, values.split()[1:])))
    return counters


def ss_drops(port):
    """d<N> of the one listener on port, from ss -ltnm (iproute2 reads it with sock_diag)."""
    out = subprocess.run(["ss", "-Hltnm", "sport = :%d" % port], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    found = re.findall(r"skmem:\([^)]*\bd(\d+)\)", out)
    if len(found) > 1 or (not found and out.strip()):
        raise SystemExit("listen_flood: expected at most one listener on port %d in ss -ltnm, got: %r" % (port, out))
    return int(found[0]) if found else None


def main():
    comm, family, port, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm.encode()), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
    fam, host = (socket.AF_INET6, "::1") if family == "6" else (socket.AF_INET, "127.0.0.1")
    ls, t0, kept = None, None, []
    for step in steps:
        name, _, arg = step.partition(":")
        if name == "listen":
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.bind((host, port))
            ls.listen(1)
            t0 = time.monotonic()
        elif name == "burst":
            socks = []
            for _ in range(min(int(arg), MOST)):
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((host, port))
                socks.append(s)
            time.sleep(0.3)
            for s in socks:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _connected(s):
                    kept.append(s)
                else:
                    s.close()
        elif name == "sleep":
            time.sleep(float(arg))
        elif name == "report":
            c = netstat()
            print(json.dumps({"drops": ss_drops(port), "listen_drops": c["ListenDrops"],
                              "listen_overflows": c["ListenOverflows"], "age": time.monotonic() - t0,
                              "pid": os.getpid()}), flush=True)
        elif name == "pause":
            print(json.dumps({"paused": True}), flush=True)
            ready, _, _ = select.select([sys.stdin], [], [], 60)
            if not ready or not sys.stdin.readline():
                raise SystemExit("listen_flood: not resumed within 60 s")
        elif name == "close":
            ls.close()
        else:
            raise SystemExit("listen_flood: unknown step %r" % step)
    for s in kept:
        s.close()


def _connected(s):
    try:
        s.getpeername()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
