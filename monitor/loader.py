"""Compile bpf/errnomon.bpf.c with bcc, attach what the running kernel offers, hand out the maps.

The only module that imports bcc, and only in a short-lived child process: bcc compiles with LLVM in
process, and the tens of MiB of heap that leaves behind would stay with the daemon for its whole life.
The child compiles, loads and attaches, passes the map and attachment file descriptors back over a unix
socket (SCM_RIGHTS) and exits. The programs stay attached for as long as the daemon holds those
descriptors; closing them detaches.
"""

import collections
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

# The hook ladder: every signal the programs count, and the hooks that can deliver it, cheapest exact one
# first. At start-up each signal takes the first rung the running kernel offers (choose_hooks).
#   tracepoint  a (raw) tracepoint: "category:event" (needs the event; raw ones also its BTF prototype)
#   fexit       the return value of a kernel function (BPF trampoline: needs kernel BTF and
#   fentry      its arguments           CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS; 5.5+)
#   kretprobe   the return value (an entry kprobe keeps the arguments): needs CONFIG_KPROBES
#   kprobe      the arguments
#   syscalls    the system calls' own enter/exit tracepoints: the last resort, opt-in (kernel.syscall_tracepoints):
#               they put every system call of every process on the traced path
# A target ending in "?" is attached where the kernel has it and not needed where it does not.
Hook = collections.namedtuple("Hook", "kind targets")
Signal = collections.namedtuple("Signal", "name lost rungs")

TRACEPOINT, FEXIT, FENTRY, KRETPROBE, KPROBE, SYSCALLS = "tracepoint", "fexit", "fentry", "kretprobe", "kprobe", \
    "syscalls"
# kernel.function_hooks names the families: fexit and fentry are "fentry", kretprobe and kprobe "kprobe";
# the syscalls family is kernel.syscall_tracepoints
FAMILY = {FEXIT: "fentry", FENTRY: "fentry", KRETPROBE: "kprobe", KPROBE: "kprobe", SYSCALLS: "syscalls"}
FUNCTION_HOOK_FAMILIES = ("fentry", "kprobe")

# What sock_sendmsg/sock_recvmsg call for AF_INET/AF_INET6 sockets (sock->ops->sendmsg): the value they
# return is the one sock:sock_send_length reports from 6.3, the one the application gets. sendfile and
# splice send through ->sendpage until 6.5 (from 6.5 through sendmsg, with MSG_SPLICE_PAGES). Unix stream
# and seqpacket sockets' own (af_unix.c, static: hooked where BTF or kallsyms has them; every unix send and
# recv on the host then passes the hook, as every TCP one does).
UNIX_SEND_FUNCTIONS = ("unix_stream_sendmsg?", "unix_seqpacket_sendmsg?")
UNIX_RECV_FUNCTIONS = ("unix_stream_recvmsg?", "unix_seqpacket_recvmsg?")
SEND_FUNCTIONS = ("inet_sendmsg", "inet6_sendmsg", "inet_sendpage?") + UNIX_SEND_FUNCTIONS
RECV_FUNCTIONS = ("inet_recvmsg", "inet6_recvmsg") + UNIX_RECV_FUNCTIONS
# Before 6.10, tcp:tcp_send_reset fires in tcp_v{4,6}_send_reset only for full sockets: a reset for a segment
# no socket wanted (NO_SOCKET) or from a time-wait socket is seen at the function.
RESET_FUNCTIONS = ("tcp_v4_send_reset", "tcp_v6_send_reset?")
# Before 5.14 (no sk_error_report() and its tracepoint), TCP sockets report errors through this callback.
ERROR_REPORT_FUNCTIONS = ("sock_def_error_report",)
# The TTL (hop limit) of the segment that completed a connection's handshake, tcp_init_transfer(sk, op, skb)
# (5.10+), and of a reset it received, tcp_reset(sk, skb) (5.12+; 5.10's has no skb): once per connection and
# per reset. kprobes only: on a kernel where fentry is refused, an fentry rung here would recompile every
# start-up for two event facts.
TTL_FUNCTIONS = ("tcp_init_transfer", "tcp_reset")
# Signals that add facts to error events, not counts: no tracepoint has them, so their first rung is a function.
EVENT_FACTS = {"peer_ttl", "reset_ttl"}
# The system calls that send or receive on a socket (enter: the fd, kept per thread; exit: the return value,
# the socket found from the fd through the task's file table); read/write/readv/writev on other files are
# told apart by the inode's type.
SEND_SYSCALLS = ("sendto", "sendmsg", "sendmmsg", "write", "writev", "sendfile64")
RECV_SYSCALLS = ("recvfrom", "recvmsg", "recvmmsg", "read", "readv")


def syscall_pairs(names):
    return tuple("syscalls:sys_%s_%s" % (edge, name) for name in names for edge in ("enter", "exit"))

SIGNALS = (
    Signal("send_errors", "errors returned by send/write/sendfile (op=send) and socket SIGPIPE are not counted", (
        Hook(TRACEPOINT, ("sock:sock_send_length",)), Hook(FEXIT, SEND_FUNCTIONS), Hook(KRETPROBE, SEND_FUNCTIONS),
        Hook(SYSCALLS, syscall_pairs(SEND_SYSCALLS)))),
    Signal("recv_errors", "errors returned by recv/read (op=recv) are not counted", (
        Hook(TRACEPOINT, ("sock:sock_recv_length",)), Hook(FEXIT, RECV_FUNCTIONS), Hook(KRETPROBE, RECV_FUNCTIONS),
        Hook(SYSCALLS, syscall_pairs(RECV_SYSCALLS)))),
    Signal("connect_errors", "connect() errors (op=connect) are not counted", (
        Hook(TRACEPOINT, ("syscalls:sys_enter_connect", "syscalls:sys_exit_connect")),)),
    Signal("accept_errors", "accept() errors (op=accept) are not counted", (
        Hook(TRACEPOINT, ("syscalls:sys_exit_accept4", "syscalls:sys_exit_accept?")),)),
    Signal("socket_states", "FINs are not counted and kernel-side events lose their owner (needs Linux 4.16)", (
        Hook(TRACEPOINT, ("sock:inet_sock_set_state",)),)),
    Signal("socket_frees", "the socket owner table relies on LRU eviction alone", (
        Hook(TRACEPOINT, ("tcp:tcp_destroy_sock",)),)),
    Signal("resets_received", "resets received are not counted", (Hook(TRACEPOINT, ("tcp:tcp_receive_reset",)),)),
    Signal("resets_sent", "resets sent are not counted", (Hook(TRACEPOINT, ("tcp:tcp_send_reset",)),)),
    Signal("resets_sent_without_socket", "resets sent for segments no socket wanted (NO_SOCKET) and by time-wait "
           "sockets are not counted", (
               Hook(TRACEPOINT, ("tcp:tcp_send_reset",)), Hook(FENTRY, RESET_FUNCTIONS), Hook(KPROBE, RESET_FUNCTIONS))),
    Signal("error_reports", "socket error reports are not counted", (
        Hook(TRACEPOINT, ("sock:inet_sk_error_report",)), Hook(FENTRY, ERROR_REPORT_FUNCTIONS),
        Hook(KPROBE, ERROR_REPORT_FUNCTIONS))),
    Signal("sigpipe", "SIGPIPE is not counted", (Hook(TRACEPOINT, ("signal:signal_generate", "signal:signal_deliver")),)),
    # facts of error events, not counts: no tracepoint has them on any kernel (EVENT_FACTS)
    Signal("peer_ttl", "error events carry no TTL of the peer's segments", (Hook(KPROBE, TTL_FUNCTIONS[:1]),)),
    Signal("reset_ttl", "error events carry no TTL of the resets received", (Hook(KPROBE, TTL_FUNCTIONS[1:]),)),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
OPT_IN = {"connect_errors", "accept_errors"}  # syscall tracepoints: kernel.syscall_tracepoints


def bare(target):
    return target.rstrip("?")


# Every tracepoint any rung uses, with what is lost when the kernel lacks it.
PROBES = {}
for _signal in SIGNALS:
    for _hook in _signal.rungs:
        if _hook.kind in (TRACEPOINT, SYSCALLS):
            for _target in _hook.targets:
                PROBES.setdefault(bare(_target), _signal.lost)
SYSCALL_PROBES = {p for p in PROBES if p.startswith("syscalls:")}
# Everything but the syscalls is attached raw: the kernel skips a raw tracepoint program only when it would
# recurse into itself, while a perf-event one is skipped silently whenever another tracing program is
# running on that CPU. There is no raw tracepoint per system call, so those stay perf-event ones (opt-in).
RAW_TRACEPOINTS = set(PROBES) - SYSCALL_PROBES
# Arguments each raw program reads from ctx->args: a kernel whose prototype (BTF) has fewer is not attached.
RAW_ARITY = {"sock:sock_send_length": 2, "sock:sock_recv_length": 2, "sock:inet_sock_set_state": 3,
             "tcp:tcp_destroy_sock": 1, "tcp:tcp_receive_reset": 1, "tcp:tcp_send_reset": 2,
             "sock:inet_sk_error_report": 1, "signal:signal_generate": 5, "signal:signal_deliver": 3}
# A rung that needs more of a tracepoint than its program reads: resets without a socket come through
# tcp_send_reset only where it has the reset reason (6.10, the same change made it fire for them).
RUNG_ARITY = {("resets_sent_without_socket", "tcp:tcp_send_reset"): 3}
# Kernel functions the programs read, with the arguments they read (BTF prototypes must have at least that).
FUNCTION_ARITY = {"inet_sendmsg": 3, "inet6_sendmsg": 3, "inet_sendpage": 5, "inet_recvmsg": 4, "inet6_recvmsg": 4,
                  "unix_stream_sendmsg": 3, "unix_seqpacket_sendmsg": 3, "unix_stream_recvmsg": 4,
                  "unix_seqpacket_recvmsg": 4,
                  "tcp_v4_send_reset": 2, "tcp_v6_send_reset": 2, "sock_def_error_report": 1,
                  "tcp_init_transfer": 3, "tcp_reset": 2}
# kretprobe instances per function: one per call blocked in it at once (a recv can block for hours)
KRETPROBE_MAXACTIVE = 4096

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
    ("socket", "sk"): None,  # the sock of the struct socket the send/recv functions take (before 6.3)
    # the syscalls rung of send/recv: an fd's socket (current->files->fdt->fd[fd], S_IFSOCK inode, private_data)
    ("task_struct", "files"): None,
    ("files_struct", "fdt"): None,
    ("fdtable", "max_fds"): None,
    ("fdtable", "fd"): None,
    ("file", "f_inode"): None,
    ("file", "private_data"): None,
    ("inode", "i_mode"): None,
    ("sock", "sk_protocol"): "SCTP and DCCP state changes are taken for TCP's",
    ("sock", "sk_err"): "socket error reports and connect failures are not counted",
    ("sock", "sk_err_soft"): "connect failures whose ICMP error arrived while connect() held the socket are not counted",
    # who closed a connection attempt whose error was already taken: the kernel outside a system call
    # (sk_lock.owned 0), and which error: the retransmission timer's when it is no longer pending
    ("sock", "sk_lock.owned"): "connect failures whose error the program took (SO_ERROR) while the kernel was "
                               "closing the attempt are not counted",
    ("inet_connection_sock", "icsk_pending"): None,
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
    # listen-queue drops: the listener's own drop counter, read by the programs at its close and by the daemon's
    # sweeps (bpf/errnomon.bpf.c listen_socks); from 6.18 part of it may be kept per NUMA node
    # a socket's own port, kept in inet_sport when the kernel has already released the bound one (skc_num 0:
    # a reset sent by close() with SO_LINGER {1, 0}, after tcp_set_state(CLOSE) put the port back)
    ("inet_sock", "inet_sport"): "resets sent by aborting closes of sockets without an owner entry carry no port",
    # error events (GET /errors): the local IPv6 address, and what a TCP socket tells about its connection
    ("sock_common", "skc_v6_rcv_saddr"): "error events of IPv6 sockets carry no local address",
    ("tcp_sock", "lsndtime"): "error events carry no idle times, bytes, retransmissions or RTT",
    ("tcp_sock", "rcv_tstamp"): "errnomon_tcp_reset_idle_seconds is not counted",
    ("inet_connection_sock", "icsk_ack.lrcvtime"): None,
    ("tcp_sock", "bytes_sent"): None,  # 4.19+; bytes_acked stands in before
    ("tcp_sock", "bytes_acked"): None,
    ("tcp_sock", "bytes_received"): None,
    ("tcp_sock", "total_retrans"): None,
    ("tcp_sock", "srtt_us"): None,
    ("sock", "sk_drops"): "listen drops are read by polling every network namespace's listeners (sock_diag), "
                          "and a listener's drops in its last poll interval are lost with it",
    ("sock", "sk_drop_counters"): None,
    # unix stream and seqpacket sockets: the type, and the peer's path (unix_sock->peer->addr->name)
    ("sock", "sk_type"): None,
    ("unix_sock", "peer"): "errors on unix sockets are not counted (no struct unix_sock in vmlinux BTF: af_unix "
                           "built as a module?)",
    ("unix_sock", "addr"): None,
    ("unix_address", "len"): None,
    ("unix_address", "name"): None,
    ("numa_drop_counters", "drops0"): None,
    ("numa_drop_counters", "drops1"): None,
}
# members read only as the start of something else: any size
BASES = {("sk_buff", "cb"), ("sock", "sk_error_queue"), ("unix_address", "name")}
# Members read whole as an unsigned integer of their own size: -D<NAME>=u8/u16/u32/u64.
LAYOUT_TYPES = {("pipe_inode_info", "tail"): "PIPE_INDEX_TYPE"}
STABLE_HEAD = {"skc_daddr": 0, "skc_dport": 12, "skc_num": 14, "skc_family": 16, "skc_state": 18}
# Offsets a signal's programs cannot do without, on every rung or on the function rungs only.
NEEDS_LAYOUT = {"error_reports": (("sock", "sk_err"),)}
# the syscalls rung: from an fd to its socket through current->files
FD_LAYOUT = (("task_struct", "files"), ("files_struct", "fdt"), ("fdtable", "max_fds"), ("fdtable", "fd"),
             ("file", "f_inode"), ("file", "private_data"), ("inode", "i_mode"), ("socket", "sk"))
FUNCTION_NEEDS_LAYOUT = {"send_errors": (("socket", "sk"),), "recv_errors": (("socket", "sk"),),
                         "resets_sent_without_socket": (("sk_buff", "head"), ("sk_buff", "network_header"),
                                                        ("sk_buff", "transport_header")),
                         "peer_ttl": (("sk_buff", "head"), ("sk_buff", "network_header")),
                         "reset_ttl": (("sk_buff", "head"), ("sk_buff", "network_header"))}


def layout_name(struct_name, member):
    return "OFF_%s_%s" % (struct_name.upper(), member.upper().replace(".", "_"))


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
        flags.append("-D%s=%d" % (layout_name(struct_name, member), m.bit_offset // 8))
        if member == "sk_protocol":
            flags.append("-DSK_PROTOCOL_TYPE=%s" % ("u8" if m.bitfield_size or size == 1 else "u16"))
        if (struct_name, member) in LAYOUT_TYPES and size <= 8:
            flags.append("-D%s=u%d" % (LAYOUT_TYPES[(struct_name, member)], size * 8))
    return flags, lost


def compile_flags(available, formats, map_size, max_sockets, layout=(), send_reset_arity=None, hooks=()):
    """available: the tracepoints to compile programs for; max_sockets: the owner table's entries, or
    (owners, seeded); send_reset_arity: arguments of the tcp_send_reset raw tracepoint per BTF (None: unknown);
    hooks: the function-hook flags of hook_flags()."""
    owners, seeded = max_sockets if isinstance(max_sockets, tuple) else (max_sockets, max_sockets)
    flags = ["-I" + abi.BPF_DIR, "-DMAP_SIZE=%d" % map_size, "-DMAX_SOCKETS=%d" % owners,
             "-DSEEDED_SOCKETS=%d" % seeded,
             "-w"]  # the generic headers bcc may be given warn by the hundred; errors still show
    for probe in sorted(available):
        flags.append("-DHAVE_" + probe.replace(":", "__"))
    flags.extend(layout)
    if has_reset_reason(formats, send_reset_arity):
        flags.append("-DHAVE_TCP_SEND_RESET_REASON")
    flags.extend(hooks)
    return flags


def has_reset_reason(formats, send_reset_arity):
    if send_reset_arity is None:  # without BTF: the format file has the field from 6.10, as the argument
        return bool(re.search(r"field:[^;]*\breason;", formats.get("tcp:tcp_send_reset") or ""))
    return send_reset_arity >= 3


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


# ---- choosing a rung per signal ----

# What the running kernel offers, as choose_hooks needs it (facts(); tests build their own).
Facts = collections.namedtuple("Facts", "tracepoints tracepoint_args functions btf kprobes layout")
# tracepoints: the events present; tracepoint_args: {event: arguments of its raw tracepoint, None if unknown};
# functions: {kernel function: its arguments per BTF (None: present, arity unknown)}; btf, kprobes: bool;
# layout: the OFF_* names layout_flags() could fill.


def function_targets():
    return sorted({bare(t) for s in SIGNALS for h in s.rungs if h.kind != TRACEPOINT for t in h.targets})


def traceable_functions(tracefs):
    """Functions kprobes can attach to, without BTF: tracefs available_filter_functions (names only)."""
    names = set()
    try:
        with open(os.path.join(tracefs, "available_filter_functions")) as f:
            for line in f:
                names.add(line.split()[0] if line.strip() else "")
    except OSError:
        pass
    return names


def facts(tracefs, formats, kernel_btf, layout):
    tracepoints = {p for p, text in formats.items() if text is not None}
    args = {}
    for probe in tracepoints & RAW_TRACEPOINTS:
        proto = kernel_btf.tracepoint_proto(probe.split(":")[1]) if kernel_btf is not None else None
        args[probe] = len(proto) if proto is not None else None
    if kernel_btf is None and "tcp:tcp_send_reset" in tracepoints:
        args["tcp:tcp_send_reset"] = 3 if has_reset_reason(formats, None) else 2
    kprobes = bool(tracefs) and os.path.exists(os.path.join(tracefs, "kprobe_events"))
    functions = {}
    if kernel_btf is not None:
        for name in function_targets():
            proto = kernel_btf.func_proto(name)
            if proto is not None:
                functions[name] = len(proto[1])
    elif kprobes:
        present = traceable_functions(tracefs)
        functions = {name: None for name in function_targets() if name in present}
    return Facts(tracepoints, args, functions, kernel_btf is not None, kprobes,
                 {f[2:].split("=")[0] for f in layout})


def _targets_problem(targets, present, needed, what):
    """Why targets cannot be hooked: a required one missing from present ({name: arguments or None}), or
    with fewer arguments than needed(name)."""
    for target in targets:
        name = bare(target)
        if name not in present:
            if target.endswith("?"):
                continue
            return "no %s %s" % (what, name)
        have, need = present[name], needed(name)
        if need is not None and have is not None and have < need:
            return "%s %s has %d arguments, %d needed" % (what, name, have, need)
    return None


def rung_problem(signal, hook, kernel, families):
    """Why this rung cannot deliver the signal on this kernel, or None if it can."""
    if hook.kind == TRACEPOINT:
        present = {p: kernel.tracepoint_args.get(p) for p in kernel.tracepoints}
        return _targets_problem(hook.targets, present,
                                lambda p: RUNG_ARITY.get((signal.name, p), RAW_ARITY.get(p)), "tracepoint")
    if hook.kind == SYSCALLS:
        if SYSCALLS not in families:
            return "syscall tracepoints off (kernel.syscall_tracepoints)"
        missing = [layout_name(*need) for need in FD_LAYOUT if layout_name(*need) not in kernel.layout]
        if missing:
            return "syscall tracepoints need %s from kernel BTF" % ", ".join(missing)
        return _targets_problem(hook.targets, {p: None for p in kernel.tracepoints}, lambda p: None, "tracepoint")
    if FAMILY[hook.kind] not in families:
        return "%s hooks not allowed (kernel.function_hooks)" % FAMILY[hook.kind]
    if FAMILY[hook.kind] == "fentry" and not kernel.btf:
        return "%s needs kernel BTF" % hook.kind
    if FAMILY[hook.kind] == "kprobe" and not kernel.kprobes:
        return "no kprobes in this kernel (CONFIG_KPROBES)"
    for struct_name, member in FUNCTION_NEEDS_LAYOUT.get(signal.name, ()):
        if layout_name(struct_name, member) not in kernel.layout:
            return "%s needs %s.%s from kernel BTF" % (hook.kind, struct_name, member)
    problem = _targets_problem(hook.targets, kernel.functions, FUNCTION_ARITY.get, "function")
    if problem is None and hook.kind == FEXIT and any(kernel.functions.get(bare(t), 0) is None for t in hook.targets):
        return "fexit needs each function's arity from BTF"
    return problem


def hook_label(kind, target):
    """The probe label of one hooked target: the tracepoint itself, or kind:function."""
    return target if kind in (TRACEPOINT, SYSCALLS) else "%s:%s" % (kind, target)


def choose_hooks(kernel, families=FUNCTION_HOOK_FAMILIES, syscalls=False):
    """For each signal, the first rung the kernel offers. Returns ({signal: (hook, [targets to attach])},
    {signal: why the cheaper rungs, or every rung, could not be used})."""
    chosen, why = {}, {}
    for signal in SIGNALS:
        if signal.name in OPT_IN and not syscalls:
            continue
        missing = [layout_name(*need) for need in NEEDS_LAYOUT.get(signal.name, ())
                   if layout_name(*need) not in kernel.layout]
        if missing:
            why[signal.name] = "needs %s from kernel BTF" % ", ".join(missing)
            continue
        problems = []
        for hook in signal.rungs:
            problem = rung_problem(signal, hook, kernel, tuple(families) + ((SYSCALLS,) if syscalls else ()))
            if problem is None:
                present = kernel.tracepoints if hook.kind in (TRACEPOINT, SYSCALLS) else kernel.functions
                chosen[signal.name] = (hook, [bare(t) for t in hook.targets if bare(t) in present])
                break
            problems.append(problem)
        if problems:
            why[signal.name] = "; ".join(problems)
    return chosen, why


def chosen_tracepoints(chosen):
    return {t for hook, targets in chosen.values() if hook.kind in (TRACEPOINT, SYSCALLS) for t in targets}


def hook_flags(chosen, kernel):
    """-D flags that compile the function-hook programs: FEXIT_<fn>=<arguments> (ctx[n] is the return value),
    FENTRY_<fn>, KRETPROBE_<fn>, KPROBE_<fn>."""
    flags = set()
    for signal, (hook, targets) in chosen.items():
        if hook.kind == SYSCALLS:
            flags.add("-DSYSCALLS_%s=1" % signal.upper())
        for target in targets if hook.kind not in (TRACEPOINT, SYSCALLS) else ():
            if hook.kind == FEXIT:
                flags.add("-DFEXIT_%s=%d" % (target, kernel.functions[target]))
            else:
                flags.add("-D%s_%s=1" % (hook.kind.upper(), target))
    return sorted(flags)


def describe_choice(chosen, why):
    """One line per signal for the start-up log: the hook it uses, and why not a cheaper one."""
    lines = []
    for signal in SIGNALS:
        if signal.name in chosen:
            hook, targets = chosen[signal.name]
            if hook.kind == SYSCALLS:
                calls = sorted({t.split("_", 2)[2] for t in targets}, key=[t.split("_", 2)[2] for t in targets].index)
                text = "%s: syscalls:sys_enter_*/sys_exit_* of %s" % (signal.name, ", ".join(calls))
            else:
                text = "%s: %s" % (signal.name, ", ".join(hook_label(hook.kind, t) for t in targets))
            if signal.name in why:
                text += " (%s)" % why[signal.name]
            lines.append((logging.INFO, text))
        elif signal.name in why:
            # a signal lost to missing BTF offsets is in the BTF warning already: one warning, not two
            # and an event fact is not a count: told, not warned
            level = logging.INFO if signal.name in EVENT_FACTS or (
                signal.name in NEEDS_LAYOUT and why[signal.name].startswith("needs")) else logging.WARNING
            lines.append((level, "%s: not attached, %s (%s)" % (signal.name, signal.lost, why[signal.name])))
    return lines


# the maps the daemon uses, in the order their fds are passed
MAPS = ("counts", "drops", "settings", "seeded", "listeners", "wakeups", "events", "event_drops")
# compiled with listen_socks (OFF_SOCK_SK_DROPS and inet_sock_set_state): its map and the program that sweeps it
LISTEN_SWEEP = "sweep_listeners"
# compiled with the unix_sock layout from BTF: the paths of unix sockets' peers, by hash (monitor/decode.py)
UNIX_PATHS = "unix_paths"
# and, where the kernel has the tcp iterator (5.9+), the one that adopts listeners older than errnomon
LISTEN_ADOPT = "bpf_iter__tcp"
# bcc names of the function-hook programs: KFUNC_PROBE/KRETFUNC_PROBE (kfunc__vmlinux__ from bcc 0.23),
# and the kprobes the child attaches itself (any other prefix would make bcc attach them on its own)
_FUNCTION_PROGRAM = re.compile(r"^(kfunc|kretfunc|errnomon_kprobe|errnomon_entry|errnomon_return)__(?:vmlinux__)?(\w+)$")
_PROGRAM_KIND = {"kfunc": FENTRY, "kretfunc": FEXIT, "errnomon_kprobe": KPROBE, "errnomon_return": KRETPROBE,
                 "errnomon_entry": "kretprobe-entry"}


def probe_of_function(name):
    """The probe a bcc function name belongs to: raw_tracepoint__tcp_send_reset -> tcp:tcp_send_reset,
    kretfunc__vmlinux__inet_sendmsg -> fexit:inet_sendmsg."""
    if name.startswith("raw_tracepoint__"):
        event = name[len("raw_tracepoint__"):]
        for probe in RAW_TRACEPOINTS:
            if probe.split(":")[1] == event:
                return probe
    elif name.startswith("tracepoint__"):
        return name[len("tracepoint__"):].replace("__", ":", 1)
    m = _FUNCTION_PROGRAM.match(name)
    if m:
        return hook_label(_PROGRAM_KIND[m.group(1)], m.group(2))
    return None


class Programs:
    """The attached programs, as file descriptors: maps to read and write, programs to ask for their
    miss counts, attachments to hold.

    close() detaches."""

    def __init__(self, map_fds, attachment_fds, attached, formats, flags, prog_fds=None, ephemeral=(0, 0),
                 legacy_kprobes=(), tracefs=None, listen_sweep=None, listen_adopt=None, unix_paths_fd=None):
        self.counts_fd, self._drops_fd, self._settings_fd = (map_fds[name] for name in MAPS[:3])
        self.seeded_fd, self.listeners_fd = map_fds["seeded"], map_fds["listeners"]  # monitor/seed.py
        self.wakeups_fd = map_fds["wakeups"]  # monitor/drain.py
        self.events_fd, self._event_drops_fd = map_fds["events"], map_fds["event_drops"]  # monitor/events.py
        self.event_interval_ns = 0  # events.rate as the programs take it; 0: no error events
        self.prog_fds = dict(prog_fds or {})  # probe name -> program fd
        # (listen_socks map fd, sweep_listeners program fd), or None where the kernel has no listen tracking
        self.listen_sweep = listen_sweep
        # (listen_adopt map fd, tcp iterator link fd), or None where the kernel or bcc has no tcp iterator
        self.listen_adopt = listen_adopt
        self.unix_paths_fd = unix_paths_fd  # unix_paths, or None where BTF lacks the unix_sock layout
        self._fds = list(map_fds.values()) + list(attachment_fds) + list(self.prog_fds.values()) + \
            list(listen_sweep or ()) + list(listen_adopt or ()) + ([unix_paths_fd] if unix_paths_fd is not None else [])
        self.attached = attached          # signal -> [(probe, attached)]
        self.formats = formats            # tracepoint -> format file text (None if missing)
        self.flags = flags
        self.ephemeral = ephemeral
        self._legacy_kprobes = list(legacy_kprobes)  # tracefs kprobe events to remove at close
        self._tracefs = tracefs
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
        return {name: self._percpu_sum(self._drops_fd, i) for i, name in enumerate(abi.METRICS)}

    def event_drops(self):
        """Cumulative error events not delivered, by reason (rate_limit, ring_full), summed over CPUs."""
        return {reason: self._percpu_sum(self._event_drops_fd, i) for reason, i in abi.EVENT_DROP_REASONS.items()}

    def _percpu_sum(self, fd, index):
        raw = bpfmap.lookup(fd, struct.pack("i", index), 8 * self._cpus) or b""
        return sum(struct.unpack("%dQ" % (len(raw) // 8), raw))

    def unix_path(self, path_hash):
        """The sun_path bytes kept under a unix remote's hash (abi.UnixPath.len of them), or None."""
        if self.unix_paths_fd is None:
            return None
        raw = bpfmap.lookup(self.unix_paths_fd, struct.pack("Q", path_hash), abi.ctypes.sizeof(abi.UnixPath))
        if raw is None:
            return None
        p = abi.UnixPath.from_buffer_copy(raw)
        return bytes(p.path)[:min(p.len, abi.DEFINES["UNIX_PATH_LEN"])]

    def write_settings(self, gen, count_flags):
        low, high = self.ephemeral
        settings = abi.Settings(gen=gen, count_flags=count_flags, ephemeral_low=low, ephemeral_high=high,
                                event_interval_ns=self.event_interval_ns)
        bpfmap.update(self._settings_fd, struct.pack("i", 0), bytes(settings))

    def close(self):
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        remove_kprobe_events(self._tracefs, self._legacy_kprobes)
        self._legacy_kprobes = []


def remove_kprobe_events(tracefs, events):
    """kretprobes with a maxactive are made through tracefs (bcc cannot make them with perf_event_open): the
    event outlives its fd until removed."""
    for event in events:
        try:  # not open(..., "a"): Python seeks to the end of an append-mode file, and tracefs refuses (EINVAL)
            fd = os.open(os.path.join(tracefs, "kprobe_events"), os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, ("-:%s\n" % event).encode())
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("could not remove kprobe event %s (%s): remove it with echo '-:%s' >> %s/kprobe_events",
                        event, e, event, tracefs)


def preflight():
    """Every check that can fail before compiling, in the order a user can fix them. Imports no bcc."""
    check_privileges()
    check_bcc()
    check_headers()
    return find_tracefs()


def send_reset_arity(kernel_btf):
    proto = kernel_btf.tracepoint_proto("tcp_send_reset") if kernel_btf is not None else None
    return None if proto is None else len(proto)


class FentryRefused(Exception):
    """Compiling, loading or attaching failed with fentry/fexit programs in: the kernel may have no BPF
    trampolines, or a security policy refuses them (this project's CI host does). Tried again without."""


class SweepRefused(Exception):
    """The kernel does not run the listener sweep (BPF_PROG_TEST_RUN of a raw tracepoint program, Linux 5.10):
    compiled again without listen_socks, listen drops are read by sock_diag polls."""


def _attachment_fds(bpf):
    fds = list(bpf.tracepoint_fds.values()) + list(bpf.raw_tracepoint_fds.values())
    fds += list(getattr(bpf, "kfunc_entry_fds", {}).values()) + list(getattr(bpf, "kfunc_exit_fds", {}).values())
    for value in bpf.kprobe_fds.values():  # bcc 0.18: {event: fd}; 0.23+: {event: {function: fd}}
        fds.extend(value.values() if isinstance(value, dict) else [value])
    return fds


def _legacy_kprobe_events(tracefs, pid):
    """The tracefs kprobe events bcc made in process pid (named ..._bcc_<pid>): group/event."""
    events = []
    try:
        with open(os.path.join(tracefs, "kprobe_events")) as f:
            for line in f:
                m = re.match(r"^[pr]\d*:(\S+_bcc_%d)\s" % pid, line)
                if m:
                    events.append(m.group(1))
    except OSError:
        pass
    return events


def _compile_and_attach(sock, tracefs, flags, chosen):
    """In the child: everything bcc. Sends {'flags', 'programs', 'attachments', 'legacy'} or {'error'} and the fds."""
    fentry = any(FAMILY.get(hook.kind) == "fentry" for hook, _ in chosen.values())
    try:
        bcc = import_bcc()
        try:
            bpf = bcc.BPF(src_file=SOURCE.encode(), cflags=flags)
        except Exception as e:  # bcc raises bare Exception on compile or attach failure
            if fentry:  # refused at load or attach (bcc words it variously, e.g. "Need super-user privileges")
                raise FentryRefused(str(e))
            raise LoadError("compiling or attaching the BPF programs failed (%s): the compiler's messages are "
                            "above; check the kernel headers bcc uses (make setup)" % e)
        unattached = {}  # event facts whose kprobe the kernel refused: {signal: why}; the counts do not need them
        for name, (hook, targets) in chosen.items():
            for target in targets:
                try:
                    if hook.kind == KRETPROBE:
                        bpf.attach_kprobe(event=target, fn_name="errnomon_entry__" + target)
                        bpf.attach_kretprobe(event=target, fn_name="errnomon_return__" + target,
                                             maxactive=KRETPROBE_MAXACTIVE)
                    elif hook.kind == KPROBE:
                        bpf.attach_kprobe(event=target, fn_name="errnomon_kprobe__" + target)
                except Exception as e:
                    if name in EVENT_FACTS:
                        unattached[name] = "attaching a kprobe to %s failed (%s)" % (target, e)
                        continue
                    raise LoadError("attaching a %s to %s failed (%s): set kernel.function_hooks to [] to run "
                                    "without function hooks" % (hook.kind, target, e))
        attachments = _attachment_fds(bpf)
        programs = sorted((probe_of_function(name.decode() if isinstance(name, bytes) else name), fn.fd)
                          for name, fn in bpf.funcs.items())
        programs = [(probe, fd) for probe, fd in programs if probe]
        fds = [bpf[name].get_fd() for name in MAPS] + attachments + [fd for _, fd in programs]
        sweep = listen_tracking(flags)
        if sweep:  # loaded, never attached: the daemon runs it (monitor/listen_queue.py)
            prog = bpf.load_func(LISTEN_SWEEP.encode(), bcc.BPF.RAW_TRACEPOINT)
            try:  # on no socket: it looks up nothing
                bpfmap.run_raw_tracepoint(prog.fd, [0] * abi.DEFINES["LISTEN_SWEEP_BATCH"])
            except OSError as e:  # before 5.10 raw tracepoint programs cannot be run so
                raise SweepRefused(str(e))
            fds += [bpf["listen_socks"].get_fd(), prog.fd]
        adopt = None
        if sweep and "-DHAVE_BPF_ITER_TCP" in flags:
            try:
                adopt = _iterator_link(bcc, bpf, LISTEN_ADOPT)
                fds += [bpf["listen_adopt"].get_fd(), adopt]
            except Exception as e:  # an older bcc or kernel: the daemon polls the older listeners instead
                adopt = str(e)
        try:  # compiled where BTF gives the unix_sock layout
            fds.append(bpf[UNIX_PATHS].get_fd())
            unix_paths = True
        except KeyError:
            unix_paths = False
        message = {"flags": flags, "programs": [p for p, _ in programs], "attachments": len(attachments),
                   "listen_sweep": sweep, "listen_adopt": adopt if isinstance(adopt, str) else bool(adopt),
                   "unix_paths": unix_paths, "unattached": unattached,
                   "legacy": _legacy_kprobe_events(tracefs, os.getpid()),
                   "bcc": getattr(bcc, "__version__", "unknown")}
    except FentryRefused as e:
        fds, message = [], {"fentry_refused": str(e)}
    except SweepRefused as e:
        fds, message = [], {"sweep_refused": str(e)}
    except LoadError as e:
        fds, message = [], {"error": str(e)}
    except Exception as e:  # anything else must still reach the parent as one line
        fds, message = [], {"error": "loading the BPF programs failed: %s: %s" % (type(e).__name__, e)}
    socket.send_fds(sock, [json.dumps(message).encode()], fds)


def _iterator_link(bcc, bpf, name):
    """The fd of a link that makes iterators of program `name`: BPF_PROG_TYPE_TRACING, attached as
    BPF_TRACE_ITER to the target its name gives after bpf_iter__ (bcc infers both from the name)."""
    import ctypes
    prog = bpf.load_func(name.encode(), bcc.BPF.TRACING)
    attach = bcc.libbcc.lib.bcc_iter_attach
    attach.restype = ctypes.c_int
    attach.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    link = attach(prog.fd, None, 0)
    if link < 0:
        raise OSError(-link, "bcc_iter_attach: " + os.strerror(-link))
    return link


def _run_child(tracefs, flags, chosen):
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's work is checked by every BPF test
        parent.close()
        try:
            _compile_and_attach(child, tracefs, flags, chosen)
        finally:
            os._exit(0)  # no cleanup: bcc would detach what the parent now holds
    child.close()
    try:
        data, fds, _, _ = socket.recv_fds(parent, 1 << 16, 256)
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    if not data:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9:
            raise LoadError("the process compiling the BPF programs was killed (SIGKILL), most likely by the "
                            "out-of-memory killer: bcc's compile needs about 100 MiB beyond the daemon's own "
                            "memory at start-up (docs/BENCHMARKS.md, Memory): raise the memory limit "
                            "(systemd MemoryMax=, the pod's limits.memory)")
        raise LoadError("the process compiling the BPF programs died: see the messages above")
    return json.loads(data), fds


def plan(tracefs, formats, kernel_btf, layout, map_size, max_sockets, syscalls, families, hz=None):
    """(chosen hooks, why, compile flags) for this kernel; hz: its CONFIG_HZ (None: unknown)."""
    kernel = facts(tracefs, formats, kernel_btf, layout)
    chosen, why = choose_hooks(kernel, families, syscalls)
    flags = compile_flags(chosen_tracepoints(chosen), formats, map_size, max_sockets, layout,
                          send_reset_arity(kernel_btf), hook_flags(chosen, kernel))
    if kernel_btf is not None and kernel_btf.func_proto("bpf_iter_tcp"):
        flags.append("-DHAVE_BPF_ITER_TCP")
    if hz:
        flags.append("-DKERNEL_HZ=%d" % hz)
    return chosen, why, flags


def load(tracefs, map_size, max_sockets, syscall_tracepoints=False, print_only=False,
         function_hooks=FUNCTION_HOOK_FAMILIES, hz=None):
    """Attach, for every signal, the cheapest hook the kernel offers (the syscall tracepoints only if
    syscall_tracepoints; function hooks only of the families in function_hooks). tracefs: what preflight()
    returned; hz: the kernel's CONFIG_HZ (None: unknown; errnomon_tcp_reset_idle_seconds is not counted)."""
    formats = {p: tracepoint_format(tracefs, p) for p in PROBES}
    # tests only: run the lower rungs on a kernel that has the tracepoints (comma-separated category:event)
    for probe in filter(None, os.environ.get("ERRNOMON_IGNORE_TRACEPOINTS", "").split(",")):
        formats[probe] = None
    kernel_btf = btf.BTF.load()
    layout, lost = layout_flags(kernel_btf)
    families = tuple(function_hooks)
    chosen, why, flags = plan(tracefs, formats, kernel_btf, layout, map_size, max_sockets, syscall_tracepoints,
                              families, hz)
    if print_only:
        return flags
    if lost:
        log.warning("kernel BTF (%s) is %s: %s", btf.VMLINUX,
                    "missing or unreadable" if kernel_btf is None else "missing members errnomon reads",
                    "; ".join(lost))
    message, fds = _run_child(tracefs, flags, chosen)
    if "fentry_refused" in message:
        log.warning("fentry/fexit programs could not attach on this kernel (%s): using the next hook of each signal",
                    message["fentry_refused"])
        families = tuple(f for f in families if f != "fentry")
        chosen, why2, flags = plan(tracefs, formats, kernel_btf, layout, map_size, max_sockets,
                                   syscall_tracepoints, families, hz)
        why = {s: "fentry refused; " + w for s, w in why2.items()}
        message, fds = _run_child(tracefs, flags, chosen)
    if "sweep_refused" in message:
        log.warning("the kernel does not run the listener sweep (%s): listen drops are read by polling every "
                    "network namespace's listeners, and a listener's drops in its last poll interval are lost "
                    "with it", message["sweep_refused"])
        layout = [f for f in layout if not f.startswith("-DOFF_SOCK_SK_DROPS=")]
        chosen, _, flags = plan(tracefs, formats, kernel_btf, layout, map_size, max_sockets, syscall_tracepoints,
                                families, hz)
        message, fds = _run_child(tracefs, flags, chosen)
    del kernel_btf  # the daemon keeps none of it
    if "error" in message:
        raise LoadError(message["error"])
    log.info("compiled with bcc %s under Python %s on Linux %s", message.get("bcc"), platform.python_version(),
             platform.release())
    if bcc_too_old(message.get("bcc")):
        log.warning("bcc %s is older than %s, the oldest errnomon is tested with (Debian 11, Ubuntu 22.04): if "
                    "a hook misbehaves, upgrade python3-bpfcc", message["bcc"], OLDEST_BCC)
    for name, problem in message.get("unattached", {}).items():
        del chosen[name]
        why[name] = problem
    for level, line in describe_choice(chosen, why):
        log.log(level, "%s", line)
    if not syscall_tracepoints:
        log.info("syscall tracepoints off (kernel.syscall_tracepoints): %s", PROBES["syscalls:sys_exit_connect"])
    map_fds = dict(zip(MAPS, fds[:len(MAPS)]))
    n = len(MAPS) + message["attachments"]
    m = n + len(message["programs"])
    prog_fds = dict(zip(message["programs"], fds[n:m]))
    attached = attachment_report(chosen, syscall_tracepoints)
    # after the programs: listen_socks and its sweep, listen_adopt and its iterator, unix_paths, each if compiled
    sweep = 2 if message.get("listen_sweep") else 0
    adopted = 2 if message.get("listen_adopt") is True else 0
    adopt = tuple(fds[m + sweep:m + sweep + adopted]) or None
    if isinstance(message.get("listen_adopt"), str):
        log.info("no tcp iterator (%s): listeners older than errnomon are read by sock_diag in their network "
                 "namespaces at each poll", message["listen_adopt"])
    programs = Programs(map_fds, fds[len(MAPS):n], attached, formats, message["flags"], prog_fds, ephemeral_ports(),
                        message.get("legacy", ()), tracefs, listen_sweep=tuple(fds[m:m + sweep]) or None,
                        listen_adopt=adopt,
                        unix_paths_fd=fds[m + sweep + adopted] if message.get("unix_paths") else None)
    if not programs.listen_sweep and any(f.startswith("-DOFF_SOCK_SK_DROPS=") for f in layout):
        # (without sk_drops in BTF the BTF warning above says so)
        log.warning("no inet_sock_set_state tracepoint: listen drops are read by polling every network namespace's "
                    "listeners, and a listener's drops in its last poll interval are lost with it")
    return programs


def listen_tracking(flags):
    """Whether these compile flags build listen_socks and its sweep program."""
    return any(f.startswith("-DOFF_SOCK_SK_DROPS=") for f in flags) and \
        "-DHAVE_sock__inet_sock_set_state" in flags


OLDEST_BCC = "0.18"


def bcc_too_old(version):
    """True if bcc's version (e.g. "0.18.0+ds-2", "0.31.0") is below OLDEST_BCC; unknown versions are not."""
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) < tuple(int(x) for x in OLDEST_BCC.split("."))


def attachment_report(chosen, syscalls):
    """{signal: [(probe, attached)]}: the hooks each signal uses, or its first rung, not attached. An event fact
    (EVENT_FACTS) is reported only where attached: its absence loses no count, and errnomon_probe_attached 0
    is an alert (deploy/prometheus/rules.yml); the start-up log says why it is absent."""
    report = {}
    for signal in SIGNALS:
        if signal.name in OPT_IN and not syscalls or signal.name in EVENT_FACTS and signal.name not in chosen:
            continue
        if signal.name in chosen:
            hook, targets = chosen[signal.name]
            report[signal.name] = [(hook_label(hook.kind, t), True) for t in targets]
        else:
            first = signal.rungs[0]
            report[signal.name] = [(hook_label(first.kind, bare(first.targets[0])), False)]
    return report
