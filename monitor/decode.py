"""Turn a drained key into named values: errno names, TCP states, reset reasons, addresses."""

import errno as errno_mod
import ipaddress
import re
from collections import namedtuple

from . import abi

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10

# include/net/tcp_states.h
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}

ERRNO_METRICS = ("socket_errors", "socket_error_reports", "connect_failures")

Event = namedtuple("Event", "metric errno op comm remote port state reason action pid cgroup")


def errno_name(code):
    if code == abi.DEFINES["ERRNO_UNKNOWN"]:
        return "unknown"
    return errno_mod.errorcode.get(code, "E%d" % code)


def reset_reasons(format_text):
    """Reset reason names from the tcp_send_reset format file's print fmt.

    The enum was renumbered between kernels, so the running kernel's own table is the only truth.
    """
    if not format_text:
        return {}
    m = re.search(r"__print_symbolic\(REC->reason,(.*?)\)\s*$", format_text, re.S | re.M)
    if not m:
        return {}
    return {int(num): name for num, name in re.findall(r"\{\s*(\d+)\s*,\s*\"(\w+)\"\s*\}", m.group(1))}


# le of each bucket of errnomon_tcp_reset_idle_seconds (key.code), and the key that holds the sum (ms)
# (as prometheus-client writes a bound: "1.0", "3600.0", "+Inf"; PromQL matches le as a string)
RESET_IDLE_LE = dict(enumerate(["%.1f" % s for s in abi.RESET_IDLE_LE] + ["+Inf"]))
RESET_IDLE_LE[abi.DEFINES["RESET_IDLE_SUM"]] = "sum"

# Resets errnomon recognises where the kernel names no reason (before 6.10): the names 6.10 gives them.
KNOWN_RESETS = {abi.DEFINES["RESET_REASON_NO_SOCKET"]: "NO_SOCKET",
                abi.DEFINES["RESET_REASON_TIMEWAIT_SOCKET"]: "TCP_TIMEWAIT_SOCKET"}


def remote_address(family, raw):
    """The peer as an ipaddress object (IPv4-mapped IPv6 as IPv4), or None when unknown."""
    if family == AF_INET:
        return ipaddress.IPv4Address(bytes(raw[:4]))
    if family == AF_INET6:
        addr = ipaddress.IPv6Address(bytes(raw))
        return addr.ipv4_mapped or addr
    return None


class UnixAddress(str):
    """The remote of a unix socket, as its label: a path, "@name" for an abstract name, "unnamed" for a peer
    without an address (socketpair), "unknown" for a path no longer kept in the kernel's unix_paths."""
    __slots__ = ()


UNNAMED, UNKNOWN = UnixAddress("unnamed"), UnixAddress("unknown")


def unix_path_label(path):
    """The label of sun_path bytes as the kernel keeps them: a pathname up to its NUL, an abstract name
    (leading NUL) as "@" and every byte of it, non-printable bytes as \\xNN."""
    if path is None:
        return UNKNOWN
    if path[:1] == b"\0":
        return UnixAddress("@" + escape(path[1:]))
    return UnixAddress(escape(path.split(b"\0", 1)[0]))


def escape(data):
    """Bytes as one line of text: valid UTF-8 kept, a backslash doubled, any other byte and any
    non-printable character escaped (\\xNN), so that two names never share a label."""
    text = data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 0x100
                   else c.encode("unicode_escape").decode() for c in text)


class Decoder:
    """unix_path: hash -> the sun_path bytes the kernel keeps under it (None: no longer kept)."""

    def __init__(self, reasons=None, unix_path=None):
        self.reasons = reasons or {}
        self.unix_path = unix_path or (lambda path_hash: None)

    def remote(self, key):
        if key.family == AF_UNIX:
            path_hash = int.from_bytes(bytes(key.remote[:8]), "little")
            if path_hash == abi.DEFINES["UNIX_HASH_UNNAMED"]:
                return UNNAMED
            return unix_path_label(self.unix_path(path_hash))
        return remote_address(key.family, key.remote)

    def __call__(self, key):
        metric = abi.METRICS[key.metric]
        return Event(
            metric=metric,
            errno=errno_name(key.code) if metric in ERRNO_METRICS else None,
            op=abi.OPS.get(key.op, "unknown") if metric == "socket_errors" else None,
            comm=key.comm.decode("utf-8", "replace"),
            remote=self.remote(key),
            port=key.port,
            state=TCP_STATES.get(key.state, "UNKNOWN") if metric == "tcp_resets_received" else None,
            reason=(self.reasons.get(key.code) or KNOWN_RESETS.get(key.code, "unknown")
                    if metric == "tcp_resets_sent" else RESET_IDLE_LE.get(key.code, "unknown")
                    if metric == "tcp_reset_idle" else None),
            action=abi.SIGPIPE_ACTIONS.get(key.code, "unknown") if metric == "sigpipe" else None,
            pid=key.tgid,
            cgroup=key.cgroup,
        )
