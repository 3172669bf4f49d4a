"""The C structures of bpf/errnomon.h, mirrored once in ctypes, and its #define constants read from the header."""

import ctypes
import os
import re

# The BPF sources: bpf/ next to the package in a source checkout (editable install); an installed copy
# (scripts/install.sh, the systemd unit) points ERRNOMON_BPF_DIR at its own copy of bpf/.
BPF_DIR = (os.environ.get("ERRNOMON_BPF_DIR")
           or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf"))
HEADER = os.path.join(BPF_DIR, "errnomon.h")


def _read_defines(path):
    defines = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"#define\s+([A-Z][A-Z0-9_]*)\s+(\d+)(?:\s|$)", line)
            if m:
                defines[m.group(1)] = int(m.group(2))
    return defines


DEFINES = _read_defines(HEADER)


def _read_list(path, name):
    with open(path) as f:
        for line in f:
            m = re.match(r"#define\s+%s\s+([\d,\s]+)$" % name, line)
            if m:
                return tuple(int(x) for x in m.group(1).split(","))
    raise ValueError("%s: no #define %s" % (path, name))


# the bucket bounds of errnomon_tcp_reset_idle_seconds, in seconds (the programs count into them)
RESET_IDLE_LE = _read_list(HEADER, "RESET_IDLE_LE")
assert len(RESET_IDLE_LE) == DEFINES["RESET_IDLE_BUCKETS"]
COMM_LEN = DEFINES["ERRNOMON_COMM_LEN"]

OPS = {DEFINES["OP_SEND"]: "send", DEFINES["OP_RECV"]: "recv", DEFINES["OP_CONNECT"]: "connect",
       DEFINES["OP_ACCEPT"]: "accept"}
SIGPIPE_ACTIONS = {DEFINES["SIGPIPE_IGNORED"]: "ignored", DEFINES["SIGPIPE_HANDLED"]: "handled",
                   DEFINES["SIGPIPE_KILLED"]: "killed"}
COUNT_FLAGS = {"EAGAIN": DEFINES["COUNT_EAGAIN"], "EINTR": DEFINES["COUNT_EINTR"],
               "EINPROGRESS": DEFINES["COUNT_EINPROGRESS"]}

# Metric of a key, by its METRIC_* number; the names are those of the exported metrics without
# the errnomon_ prefix and _total suffix.
METRICS = ("socket_errors", "socket_error_reports", "tcp_resets_received", "tcp_resets_sent",
           "tcp_fins_sent", "sigpipe", "connect_failures", "tcp_fins_received", "listen_drops", "tcp_reset_idle")
assert [DEFINES["METRIC_" + m.upper()] for m in METRICS] == list(range(DEFINES["METRICS"]))


class Key(ctypes.Structure):
    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("code", ctypes.c_uint16),
        ("op", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("gen", ctypes.c_uint8),
        ("metric", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("cgroup", ctypes.c_uint64),
        ("remote", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


class UnixPath(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("path", ctypes.c_uint8 * (DEFINES["UNIX_PATH_WORDS"] * 8))]


class Owner(ctypes.Structure):
    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("cgroup", ctypes.c_uint64),
        ("remote", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * COMM_LEN),
        ("established_ns", ctypes.c_uint64),
        ("fin_ns", ctypes.c_uint64),
        ("peer_ttl", ctypes.c_uint8),
        ("rst_ttl", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 6),
    ]


class Listener(ctypes.Structure):
    _fields_ = [("owner", Owner), ("count", ctypes.c_uint32)]


class ListenSock(ctypes.Structure):
    _fields_ = [("owner", Owner), ("drops", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("cookie", ctypes.c_uint64)]


class Settings(ctypes.Structure):
    _fields_ = [("gen", ctypes.c_uint32), ("count_flags", ctypes.c_uint32), ("ephemeral_low", ctypes.c_uint16),
                ("ephemeral_high", ctypes.c_uint16), ("event_interval_ns", ctypes.c_uint32)]


class Event(ctypes.Structure):
    _fields_ = [
        ("ktime_ns", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
        ("established_ns", ctypes.c_uint64),
        ("fin_ns", ctypes.c_uint64),
        ("bytes_sent", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("jiffies", ctypes.c_uint32),
        ("lsndtime", ctypes.c_uint32),
        ("lrcvtime", ctypes.c_uint32),
        ("total_retrans", ctypes.c_uint32),
        ("srtt_us", ctypes.c_uint32),
        ("code", ctypes.c_uint16),
        ("local_port", ctypes.c_uint16),
        ("remote_port", ctypes.c_uint16),
        ("port", ctypes.c_uint16),
        ("kind", ctypes.c_uint8),
        ("op", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("rst_ttl", ctypes.c_uint8),
        ("peer_ttl", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("local", ctypes.c_uint8 * 16),
        ("remote", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


# kind of an Event, by its EVENT_* number, as GET /errors names it
EVENT_KINDS = {DEFINES["EVENT_SOCKET_ERROR"]: "socket_error", DEFINES["EVENT_RESET_RECEIVED"]: "reset_received",
               DEFINES["EVENT_RESET_SENT"]: "reset_sent", DEFINES["EVENT_CONNECT_FAILED"]: "connect_failed"}
# reason label of errnomon_events_dropped_total -> index in the event_drops array
EVENT_DROP_REASONS = {"rate_limit": DEFINES["EVENT_DROP_RATE_LIMIT"], "ring_full": DEFINES["EVENT_DROP_RING_FULL"]}
EVENTS_RING_BYTES = DEFINES["EVENTS_RING_PAGES"] * 4096


GEN_OFFSET = Key.gen.offset
