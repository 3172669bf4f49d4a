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
    "sock:inet_sk_error_report": "socket error reports are not counted (needs Linux 5.14 and kernel BTF)",
    "signal:signal_generate": "SIGPIPE is not counted",
    "signal:signal_deliver": "SIGPIPE is not counted",
}
SYSCALL_PROBES = {p for p in PROBES if p.startswith("syscalls:")}
# Everything but the syscalls is attached raw: the kernel skips a raw tracepoint program only when it would
# recurse into itself, while a perf-event one is skipped silently whenever another tracing program is
# running on that CPU. There is no raw tracepoint per system call, so those stay perf-event ones (opt-in).
RAW_TRACEPOINTS = set(PROBES) - SYSCALL_PROBES
# Arguments each raw program reads from ctx->args: a kernel whose prototype (BTF) has fewer is not attached.
RAW_ARITY = {"sock:sock_send_length": 2, "sock:sock_recv_length": 2, "sock:inet_sock_set_state": 3,
             "tcp:tcp_destroy_sock": 1, "tcp:tcp_receive_reset": 1, "tcp:tcp_send_reset": 2,
             "sock:inet_sk_error_report": 1, "signal:signal_generate": 5, "signal:signal_deliver": 3}
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


MODULES_DIR = "/lib/modules"
KHEADERS = "/sys/kernel/kheaders.tar.xz"


def check_headers():
    release = platform.release()
    if os.environ.get("BCC_KERNEL_SOURCE") or os.path.exists(KHEADERS):
        return
    build = os.path.join(MODULES_DIR, release, "build")
    if os.path.isdir(os.path.join(build, "include")):
        return
    if os.path.islink(build):  # a container given the host's /lib/modules, but not the /usr/src its links point into
        raise LoadError("%s links to %s, which is not here: mount the host's /usr/src read-only as well as "
                        "/lib/modules" % (build, os.readlink(build)))
    raise LoadError("no kernel headers bcc can use at %s, nor %s: install linux-headers-%s, or run 'make setup', "
                    "which links the distribution's generic headers there; in a container, mount the host's "
                    "/lib/modules and /usr/src read-only" % (build, KHEADERS, release))


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


# Struct members beyond the stable head of sock_common, read at their offset in the running kernel's BTF
# (-DOFF_<STRUCT>_<MEMBER>=n), with what is lost without them.
LAYOUT = {
    ("sock_common", "skc_v6_daddr"): "IPv6 peers of sockets without an owner entry are unknown (remote=\"\")",
    ("sock_common", "skc_cookie"): "sockets opened before errnomon started keep no owner (only their listeners do)",
    ("sock", "sk_protocol"): "SCTP and DCCP state changes are taken for TCP's",
    ("sock", "sk_err"): "socket error reports and connect failures are not counted",
    ("sock", "sk_err_soft"): "connect failures whose ICMP error arrived while connect() held the socket are not counted",
    ("sock", "sk_error_queue"): None,
    ("sock", "sk_error_queue.prev"): "connect failures whose ICMP error the program already read with SO_ERROR are "
                                     "not counted",
    ("sk_buff", "cb"): None,  # where an error-queue skb keeps its struct sock_exterr_skb
    ("sock_exterr_skb", "ee.ee_errno"): None,
    ("sk_buff", "head"): "resets sent by listeners and for no socket carry the listener's address, not the peer's",
    ("sk_buff", "network_header"): None,
    ("sk_buff", "transport_header"): None,
    # sendfile sends through the task's internal pipe: a chunk that fails after one that sent is not the
    # call's error (bpf/errnomon.bpf.c, sent_earlier_in_sendfile)
    ("task_struct", "splice_pipe"): "a send error inside sendfile() is counted even when the call returned the "
                                    "bytes it had sent before it (op=\"send\" over-counts)",
    ("pipe_inode_info", "tail"): None,
}
BASES = {("sk_buff", "cb"), ("sock", "sk_error_queue")}  # members read only as the start of something else: any size
# Members read whole as an unsigned integer of their own size: -D<NAME>=u8/u16/u32/u64.
LAYOUT_TYPES = {("pipe_inode_info", "tail"): "PIPE_INDEX_TYPE"}
STABLE_HEAD = {"skc_daddr": 0, "skc_dport": 12, "skc_num": 14, "skc_family": 16, "skc_state": 18}
NEEDS_LAYOUT = {"sock:inet_sk_error_report": ("sock", "sk_err")}


def layout_flags(kernel_btf):
    """-D flags for the offsets the programs need, from the running kernel's BTF (None: no BTF).

    Returns (flags, [what is lost])."""
    lost = []
    if kernel_btf is None:
        return [], [what for what in LAYOUT.values() if what]
    head = {f: kernel_btf.member_offset("sock_common", f) for f in STABLE_HEAD}
    if head != STABLE_HEAD:
        raise LoadError("struct sock_common starts differently on this kernel (%s): errnomon cannot read its "
                        "sockets; please report the kernel version" % head)
    flags = []
    for (struct_name, member), what in LAYOUT.items():
        m = kernel_btf.member(struct_name, member)
        size = m and kernel_btf.type_size(m.type)
        if m is None or m.bit_offset % 8 or (m.bitfield_size and m.bitfield_size != 8) or (
                size not in (1, 2, 4, 8, 16) and (struct_name, member) not in BASES):
            if what:
                lost.append(what)
            continue
        flags.append("-DOFF_%s_%s=%d" % (struct_name.upper(), member.upper().replace(".", "_"), m.bit_offset // 8))
        if member == "sk_protocol":
            flags.append("-DSK_PROTOCOL_TYPE=%s" % ("u8" if m.bitfield_size or size == 1 else "u16"))
        if (struct_name, member) in LAYOUT_TYPES and size <= 8:
            flags.append("-D%s=u%d" % (LAYOUT_TYPES[(struct_name, member)], size * 8))
    return flags, lost


def compile_flags(available, formats, map_size, max_sockets, layout=(), send_reset_arity=None):
    """send_reset_arity: arguments of the tcp_send_reset raw tracepoint per BTF (None: unknown)."""
    flags = ["-I" + abi.BPF_DIR, "-DMAP_SIZE=%d" % map_size, "-DMAX_SOCKETS=%d" % max_sockets,
             "-w"]  # the generic headers bcc may be given warn by the hundred; errors still show
    for probe in sorted(available):
        flags.append("-DHAVE_" + probe.replace(":", "__"))
    flags.extend(layout)
    if send_reset_arity is None:  # without BTF: the format file has the field from 6.10, as the argument
        reset_fmt = formats.get("tcp:tcp_send_reset") or ""
        has_reason = bool(re.search(r"field:[^;]*\breason;", reset_fmt))
    else:
        has_reason = send_reset_arity >= 3
    if has_reason:
        flags.append("-DHAVE_TCP_SEND_RESET_REASON")
    return flags


def ephemeral_ports(path="/proc/sys/net/ipv4/ip_local_port_range"):
    """(low, high) of the ports the kernel hands out to clients; (0, 0) when unreadable (no port is taken
    for ephemeral, as before this was known)."""
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        log.warning("cannot read %s: service ports of unattributed sockets are guessed from listeners only", path)
        return 0, 0


# the maps the daemon uses, in the order their fds are passed
MAPS = ("counts", "drops", "settings", "seeded", "listeners")


def probe_of_function(name):
    """The probe a bcc function name belongs to: raw_tracepoint__tcp_send_reset -> tcp:tcp_send_reset."""
    if name.startswith("raw_tracepoint__"):
        event = name[len("raw_tracepoint__"):]
        for probe in RAW_TRACEPOINTS:
            if probe.split(":")[1] == event:
                return probe
    elif name.startswith("tracepoint__"):
        return name[len("tracepoint__"):].replace("__", ":", 1)
    return None


class Programs:
    """The attached programs, as file descriptors: maps to read and write, programs to ask for their
    miss counts, attachments to hold.

    close() detaches."""

    def __init__(self, map_fds, attachment_fds, attached, formats, flags, prog_fds=None, ephemeral=(0, 0)):
        self.counts_fd, self._drops_fd, self._settings_fd = (map_fds[name] for name in MAPS[:3])
        self.seeded_fd, self.listeners_fd = map_fds["seeded"], map_fds["listeners"]  # monitor/seed.py
        self.prog_fds = dict(prog_fds or {})  # probe name -> program fd
        self._fds = list(map_fds.values()) + list(attachment_fds) + list(self.prog_fds.values())
        self.attached = attached          # probe name -> bool
        self.formats = formats            # probe name -> format file text (None if missing)
        self.flags = flags
        self.ephemeral = ephemeral
        self._cpus = bpfmap.possible_cpus()

    def missed(self):
        """Cumulative runs the kernel skipped, per probe (bpf_prog_info.recursion_misses, Linux 5.12+;
        probes whose kernel does not report it are left out)."""
        out = {}
        for probe, fd in sorted(self.prog_fds.items()):
            n = bpfmap.recursion_misses(fd)
            if n is not None:
                out[probe] = n
        return out

    def drops(self):
        """Cumulative increments lost to a full counts map, per metric, summed over CPUs."""
        out = {}
        for i, name in enumerate(abi.METRICS):
            raw = bpfmap.lookup(self._drops_fd, struct.pack("i", i), 8 * self._cpus) or b""
            out[name] = sum(struct.unpack("%dQ" % (len(raw) // 8), raw))
        return out

    def write_settings(self, gen, count_flags):
        low, high = self.ephemeral
        settings = abi.Settings(gen=gen, count_flags=count_flags, ephemeral_low=low, ephemeral_high=high)
        bpfmap.update(self._settings_fd, struct.pack("i", 0), bytes(settings))

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


def available_probes(bcc, excluded=(), kernel_btf=None, layout=()):
    # Raw tracepoints (Linux 4.17) predate every tracepoint used raw here but tcp_destroy_sock and
    # tcp_*_reset (4.15): tracepoint_exists() suffices on the kernels errnomon supports.
    # Not bcc's BPF.support_raw_tracepoint(): it reads /proc/kallsyms addresses, which need euid 0 and
    # CAP_SYSLOG, are zeroed by kptr_restrict=2 and hidden by systemd's ProtectKernelTunables=.
    available = {p for p in PROBES if p not in excluded and bcc.BPF.tracepoint_exists(*p.split(":"))}
    return usable_probes(available, kernel_btf, layout)


def usable_probes(available, kernel_btf=None, layout=()):
    """Of the tracepoints the kernel has, those the programs can attach to: prototype (when BTF tells it)
    and needed offsets present, pairs complete."""
    available = set(available)
    if kernel_btf is not None:
        for probe in sorted(available & RAW_TRACEPOINTS):
            proto = kernel_btf.tracepoint_proto(probe.split(":")[1])
            if proto is not None and len(proto) < RAW_ARITY[probe]:
                log.warning("raw tracepoint %s has %d arguments on this kernel, errnomon reads %d: not attached",
                            probe, len(proto), RAW_ARITY[probe])
                available.discard(probe)
    for probe, (struct_name, member) in NEEDS_LAYOUT.items():
        if "-DOFF_%s_%s" % (struct_name.upper(), member.upper()) not in {f.split("=")[0] for f in layout}:
            available.discard(probe)
    for a, b in PAIRS:
        if not (a in available and b in available):
            available -= {a, b}
    return available


def send_reset_arity(kernel_btf):
    proto = kernel_btf.tracepoint_proto("tcp_send_reset") if kernel_btf is not None else None
    return None if proto is None else len(proto)


def _compile_and_attach(sock, formats, map_size, max_sockets, excluded, layout, arity):
    """In the child: everything bcc. Sends {'available', 'flags', 'programs'} or {'error'} and the fds."""
    try:
        bcc = import_bcc()
        kernel_btf = btf.BTF.load()
        available = available_probes(bcc, excluded, kernel_btf, layout)
        flags = compile_flags(available, formats, map_size, max_sockets, layout, arity)
        try:
            bpf = bcc.BPF(src_file=SOURCE.encode(), cflags=flags)
        except Exception as e:  # bcc raises bare Exception on compile or attach failure
            raise LoadError("compiling or attaching the BPF programs failed (%s): the compiler's messages are "
                            "above; check the kernel headers bcc uses (make setup)" % e)
        attachments = list(bpf.tracepoint_fds.values()) + list(bpf.raw_tracepoint_fds.values())
        programs = sorted((probe_of_function(name.decode() if isinstance(name, bytes) else name), fn.fd)
                          for name, fn in bpf.funcs.items())
        programs = [(probe, fd) for probe, fd in programs if probe]
        fds = [bpf[name].get_fd() for name in MAPS] + attachments + [fd for _, fd in programs]
        message = {"available": sorted(available), "flags": flags, "programs": [p for p, _ in programs],
                   "attachments": len(attachments)}
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
    kernel_btf = btf.BTF.load()
    layout, lost = layout_flags(kernel_btf)
    arity = send_reset_arity(kernel_btf)
    if print_only:
        available = available_probes(import_bcc(), excluded, kernel_btf, layout)
        return compile_flags(available, formats, map_size, max_sockets, layout, arity)
    if lost:
        log.warning("kernel BTF (%s) is %s: %s", btf.VMLINUX,
                    "missing or unreadable" if kernel_btf is None else "missing members errnomon reads",
                    "; ".join(lost))
    del kernel_btf  # the child reads it again; the daemon keeps none of it
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's work is checked by every BPF test
        parent.close()
        try:
            _compile_and_attach(child, formats, map_size, max_sockets, excluded, layout, arity)
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
        if formats.get(probe) is not None:
            continue  # present, but not attachable here: the BTF or prototype warning above says why
        log.warning("tracepoint %s is missing on this kernel: %s", probe, PROBES[probe])
    if excluded:
        log.info("syscall tracepoints off (kernel.syscall_tracepoints): %s", PROBES["syscalls:sys_exit_connect"])
    map_fds = dict(zip(MAPS, fds[:len(MAPS)]))
    n = len(MAPS) + message["attachments"]
    prog_fds = dict(zip(message["programs"], fds[n:]))
    attached = {p: p in available for p in PROBES if p not in excluded}
    return Programs(map_fds, fds[len(MAPS):n], attached, formats, message["flags"], prog_fds, ephemeral_ports())
