"""Compile bpf/errnomon.bpf.c with bcc, attach what the running kernel offers, hand out the maps.

The only module that imports bcc. Everything it returns is plain: map file descriptors and the
tracepoint metadata the decoder needs.
"""

import ctypes
import logging
import os
import platform
import re
import subprocess

from . import abi

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


def import_bcc():
    try:
        import bcc  # noqa: F401
    except ImportError:
        import sys
        raise LoadError("bcc is not importable by %s: apt-get install python3-bpfcc and run errnomon from a "
                        "venv made with /usr/bin/python3 --system-site-packages ('make setup' does both)"
                        % sys.executable)
    return bcc


def tracepoint_format(tracefs, probe):
    category, event = probe.split(":")
    try:
        with open(os.path.join(tracefs, "events", category, event, "format")) as f:
            return f.read()
    except OSError:
        return None


def compile_flags(available, formats, map_size, max_sockets):
    flags = ["-I" + abi.BPF_DIR, "-DMAP_SIZE=%d" % map_size, "-DMAX_SOCKETS=%d" % max_sockets,
             "-w"]  # the generic headers bcc may be given warn by the hundred; errors still show
    for probe in sorted(available):
        flags.append("-DHAVE_" + probe.replace(":", "__"))
    reset_fmt = formats.get("tcp:tcp_send_reset") or ""
    if re.search(r"field:[^;]*\breason;", reset_fmt):
        flags.append("-DHAVE_TCP_SEND_RESET_REASON")
    return flags


class Programs:
    """The loaded programs: map fds, which probes are attached, tracepoint formats. close() detaches."""

    def __init__(self, bpf, attached, formats, flags):
        self._bpf = bpf
        self.attached = attached          # probe name -> bool
        self.formats = formats            # probe name -> format file text (None if missing)
        self.flags = flags
        self.counts_fd = bpf["counts"].get_fd()
        self._drops = bpf["drops"]
        self._settings = bpf["settings"]

    def drops(self):
        """Cumulative increments lost to a full counts map, per metric, summed over CPUs."""
        return {name: sum(self._drops[ctypes.c_int(i)]) for i, name in enumerate(abi.METRICS)}

    def write_settings(self, gen, count_flags):
        self._settings[ctypes.c_int(0)] = abi.Settings(gen=gen, count_flags=count_flags)

    def close(self):
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def preflight():
    """Every check that can fail before compiling, in the order a user can fix them."""
    check_privileges()
    bcc = import_bcc()
    check_headers()
    tracefs = find_tracefs()
    return bcc, tracefs


def load(map_size, max_sockets, print_only=False):
    bcc, tracefs = preflight()
    formats = {p: tracepoint_format(tracefs, p) for p in PROBES}
    # Raw tracepoints (Linux 4.17) predate the raw probes' tracepoints (6.3): tracepoint_exists() suffices.
    # Not bcc's BPF.support_raw_tracepoint(): it reads /proc/kallsyms addresses, which need euid 0 and
    # CAP_SYSLOG, are zeroed by kptr_restrict=2 and hidden by systemd's ProtectKernelTunables=.
    available = {p for p in PROBES if bcc.BPF.tracepoint_exists(*p.split(":"))}
    for a, b in PAIRS:
        if not (a in available and b in available):
            available -= {a, b}
    flags = compile_flags(available, formats, map_size, max_sockets)
    if print_only:
        return flags
    for probe in sorted(set(PROBES) - available):
        log.warning("tracepoint %s is missing on this kernel: %s", probe, PROBES[probe])
    try:
        bpf = bcc.BPF(src_file=SOURCE.encode(), cflags=flags)
    except Exception as e:  # bcc raises bare Exception on compile or attach failure
        raise LoadError("compiling or attaching the BPF programs failed (%s): the compiler's messages are "
                        "above; check the kernel headers bcc uses (make setup)" % e)
    attached = {p: p in available for p in PROBES}
    return Programs(bpf, attached, formats, flags)
