"""Compile bpf/errnomon.bpf.c with bcc, attach what the running kernel offers, hand out the maps.

The only module that imports bcc, and only in a short-lived child process: bcc compiles with LLVM in
process, and the tens of MiB of heap that leaves behind would stay with the daemon for its whole life.
The child compiles, loads and attaches, passes the map and attachment file descriptors back over a unix
socket (SCM_RIGHTS) and exits. The programs stay attached for as long as the daemon holds those
descriptors; closing them detaches.
"""

import importlib.util
import json
import logging
import os
import platform
import re
import socket
import struct
import subprocess

from . import abi, bpfmap, btf

log = logging.getLogger("errnomon.loader")

SOURCE = os.path.join(abi.BPF_DIR, "errnomon.bpf.c")
TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# Every tracepoint the programs use, with what is lost when the kernel lacks it.
PROBES = {
    "sock:sock_send_length": "errors returned by send/write (op=send) and socket SIGPIPE are not counted (needs Linux 6.3)",
    "sock:sock_recv_length": "errors returned by recv/read (op=recv) are not counted (needs Linux 6.3)",
    "syscalls:sys_enter_connect": "connect() errors (op=connect) are not counted",
    "syscalls:sys_exit_connect": "connect() errors (op=connect) are not counted",
    "syscalls:sys_exit_accept4": "accept4() errors (op=accept) are not counted",
    "syscalls:sys_exit_accept": "accept() errors (op=accept) are not counted",
    "sock:inet_sock_set_state": "FINs are not counted and kernel-side events lose their owner (needs Linux 4.16)",
    "tcp:tcp_destroy_sock": "the socket owner table relies on LRU eviction alone",
    "tcp:tcp_receive_reset": "resets received are not counted",
    "tcp:tcp_send_reset": "resets sent are not counted",
    "sock:inet_sk_error_report": "socket error reports are not counted (needs Linux 5.14)",
    "signal:signal_generate": "SIGPIPE is not counted",
    "signal:signal_deliver": "SIGPIPE is not counted",
}
RAW_TRACEPOINTS = {"sock:sock_send_length", "sock:sock_recv_length"}  # attached raw: the cheapest hot path
# Probes compiled only as a pair; missing one disables both.
PAIRS = (("syscalls:sys_enter_connect", "syscalls:sys_exit_connect"),
         ("signal:signal_generate", "signal:signal_deliver"))

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


class LoadError(Exception):
    """One line: what stops errnomon from loading its programs, and what to do."""


def effective_capabilities():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_privileges():
    caps = effective_capabilities()
    has = lambda cap: bool(caps & (1 << cap))  # noqa: E731
    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    raise LoadError("loading BPF programs needs root, or CAP_BPF and CAP_PERFMON (plus CAP_DAC_READ_SEARCH "
                    "when not uid 0): run as root (sudo) or grant them (AmbientCapabilities= in the systemd unit)")


def find_tracefs():
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    for path in TRACEFS_CANDIDATES:
        try:
            os.listdir(path)
        except PermissionError:  # mode 0700: mounted, but not for this uid
            raise LoadError("%s is not readable by uid %d: run as root, or grant CAP_DAC_READ_SEARCH "
                            "(AmbientCapabilities= in the systemd unit)" % (path, os.geteuid()))
        except OSError:
            pass
    try:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_CANDIDATES[0]], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        raise LoadError("tracefs is not mounted at /sys/kernel/tracing and mounting it failed (%s): "
                        "mount -t tracefs nodev /sys/kernel/tracing" % (getattr(e, "stderr", b"") or e))
    if os.path.isdir(os.path.join(TRACEFS_CANDIDATES[0], "events")):
        return TRACEFS_CANDIDATES[0]
    raise LoadError("tracefs mounted but has no events/: is CONFIG_FTRACE enabled in this kernel?")


def check_headers():
    release = platform.release()
    if os.environ.get("BCC_KERNEL_SOURCE") or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return
    build = "/lib/modules/%s/build" % release
    if not os.path.isdir(os.path.join(build, "include")):
        raise LoadError("no kernel headers bcc can use at %s: install linux-headers-%s, or run 'make setup', "
                        "which links the distribution's generic headers there" % (build, release))


def _bcc_missing():
    import sys
    return LoadError("bcc is not importable by %s: apt-get install python3-bpfcc and run errnomon from a venv "
                     "made with /usr/bin/python3 --system-site-packages ('make setup' does both)" % sys.executable)


def check_bcc():
    """bcc is importable, without importing it (the daemon never maps libbcc; only the loader's child does)."""
    if importlib.util.find_spec("bcc") is None:
        raise _bcc_missing()


def import_bcc():
    check_bcc()
    try:
        import bcc
    except ImportError:
        raise _bcc_missing()
    return bcc


def tracepoint_format(tracefs, probe):
    category, event = probe.split(":")
    try:
        with open(os.path.join(tracefs, "events", category, event, "format")) as f:
            return f.read()
    except OSError:
        return None


def layout_flags(kernel_btf):
    """-DOFF_SOCK_COMMON_SKC_COOKIE: where the running kernel keeps a socket's cookie (seeded owners)."""
    offset = kernel_btf.member_offset("sock_common", "skc_cookie") if kernel_btf else None
    if offset is None:
        log.warning("no kernel BTF for sock_common.skc_cookie: sockets opened before errnomon started stay "
                    "unattributed on kernel-side events")
        return []
    return ["-DOFF_SOCK_COMMON_SKC_COOKIE=%d" % offset]


def compile_flags(available, formats, map_size, max_sockets, layout=()):
    flags = ["-I" + abi.BPF_DIR, "-DMAP_SIZE=%d" % map_size, "-DMAX_SOCKETS=%d" % max_sockets,
             "-w"]  # the generic headers bcc may be given warn by the hundred; errors still show
    flags.extend(layout)
    for probe in sorted(available):
        flags.append("-DHAVE_" + probe.replace(":", "__"))
    reset_fmt = formats.get("tcp:tcp_send_reset") or ""
    if re.search(r"field:[^;]*\breason;", reset_fmt):
        flags.append("-DHAVE_TCP_SEND_RESET_REASON")
    return flags


# the maps the daemon uses, in the order their fds are passed
MAPS = ("counts", "drops", "settings", "seeded", "listeners")


class Programs:
    """The attached programs, as file descriptors: maps to read and write, attachments to hold.

    close() detaches."""

    def __init__(self, map_fds, attachment_fds, attached, formats, flags):
        self.counts_fd, self._drops_fd, self._settings_fd = (map_fds[name] for name in MAPS[:3])
        self.seeded_fd, self.listeners_fd = map_fds["seeded"], map_fds["listeners"]  # monitor/seed.py
        self._fds = list(map_fds.values()) + list(attachment_fds)
        self.attached = attached          # probe name -> bool
        self.formats = formats            # probe name -> format file text (None if missing)
        self.flags = flags
        self._cpus = bpfmap.possible_cpus()

    def drops(self):
        """Cumulative increments lost to a full counts map, per metric, summed over CPUs."""
        out = {}
        for i, name in enumerate(abi.METRICS):
            raw = bpfmap.lookup(self._drops_fd, struct.pack("i", i), 8 * self._cpus) or b""
            out[name] = sum(struct.unpack("%dQ" % (len(raw) // 8), raw))
        return out

    def write_settings(self, gen, count_flags):
        bpfmap.update(self._settings_fd, struct.pack("i", 0), bytes(abi.Settings(gen=gen, count_flags=count_flags)))

    def close(self):
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def preflight():
    """Every check that can fail before compiling, in the order a user can fix them. Imports no bcc."""
    check_privileges()
    check_bcc()
    check_headers()
    return find_tracefs()


SYSCALL_PROBES = {p for p in PROBES if p.startswith("syscalls:")}


def available_probes(bcc, excluded=()):
    # Raw tracepoints (Linux 4.17) predate the raw probes' tracepoints (6.3): tracepoint_exists() suffices.
    # Not bcc's BPF.support_raw_tracepoint(): it reads /proc/kallsyms addresses, which need euid 0 and
    # CAP_SYSLOG, are zeroed by kptr_restrict=2 and hidden by systemd's ProtectKernelTunables=.
    available = {p for p in PROBES if p not in excluded and bcc.BPF.tracepoint_exists(*p.split(":"))}
    for a, b in PAIRS:
        if not (a in available and b in available):
            available -= {a, b}
    return available


def _compile_and_attach(sock, formats, map_size, max_sockets, excluded, layout):
    """In the child: everything bcc. Sends {'available', 'flags'} or {'error'} and the fds."""
    try:
        bcc = import_bcc()
        available = available_probes(bcc, excluded)
        flags = compile_flags(available, formats, map_size, max_sockets, layout)
        try:
            bpf = bcc.BPF(src_file=SOURCE.encode(), cflags=flags)
        except Exception as e:  # bcc raises bare Exception on compile or attach failure
            raise LoadError("compiling or attaching the BPF programs failed (%s): the compiler's messages are "
                            "above; check the kernel headers bcc uses (make setup)" % e)
        attachments = list(bpf.tracepoint_fds.values()) + list(bpf.raw_tracepoint_fds.values())
        fds = [bpf[name].get_fd() for name in MAPS] + attachments
        message = {"available": sorted(available), "flags": flags}
    except LoadError as e:
        fds, message = [], {"error": str(e)}
    except Exception as e:  # anything else must still reach the parent as one line
        fds, message = [], {"error": "loading the BPF programs failed: %s: %s" % (type(e).__name__, e)}
    socket.send_fds(sock, [json.dumps(message).encode()], fds)


def load(tracefs, map_size, max_sockets, syscall_tracepoints=False, print_only=False):
    """Attach everything the kernel has, less the syscalls: tracepoints if syscall_tracepoints is false
    (those are then neither attached nor reported as probes). tracefs: what preflight() returned."""
    formats = {p: tracepoint_format(tracefs, p) for p in PROBES}
    excluded = set() if syscall_tracepoints else SYSCALL_PROBES
    layout = layout_flags(btf.BTF.load())
    if print_only:
        return compile_flags(available_probes(import_bcc(), excluded), formats, map_size, max_sockets, layout)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's work is checked by every BPF test
        parent.close()
        try:
            _compile_and_attach(child, formats, map_size, max_sockets, excluded, layout)
        finally:
            os._exit(0)  # no cleanup: bcc would detach what the parent now holds
    child.close()
    try:
        data, fds, _, _ = socket.recv_fds(parent, 1 << 16, 256)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if not data:
        raise LoadError("the process compiling the BPF programs died: see the messages above")
    message = json.loads(data)
    if "error" in message:
        raise LoadError(message["error"])
    available = set(message["available"])
    for probe in sorted(set(PROBES) - available - excluded):
        log.warning("tracepoint %s is missing on this kernel: %s", probe, PROBES[probe])
    if excluded:
        log.info("syscall tracepoints off (kernel.syscall_tracepoints): %s", PROBES["syscalls:sys_exit_connect"])
    map_fds = dict(zip(MAPS, fds[:len(MAPS)]))
    attached = {p: p in available for p in PROBES if p not in excluded}
    return Programs(map_fds, fds[len(MAPS):], attached, formats, message["flags"])
