"""Error events: which connection failed and why, beside the counts (GET /errors).

The programs put one record on the `events` ring for every socket error, reset and failed connect they count
(rate-limited in the kernel: events.rate). Here a record becomes a dict of the /errors schema, with the same
extra labels the metrics carry (pid, unit, pod: from the cgroup, by the aggregator's resolvers), the other end
when it is on this host (Peers: its reset_sent joined by the connection), and an explanation from RULES, and the
last events.keep of them are kept for GET /errors and its filters.
"""

import collections
import errno as errno_mod
import gzip
import ipaddress
import json
import logging
import platform
import re
import sys
import threading
import time
from urllib.parse import parse_qs

from . import abi, eventview
from .decode import KNOWN_RESETS, TCP_STATES, errno_name, remote_address

log = logging.getLogger("errnomon.events")

AF_INET, AF_INET6 = 2, 10
FAMILIES = {AF_INET: "ipv4", AF_INET6: "ipv6"}
OPS = dict(abi.OPS)
TCP_FACTS = abi.DEFINES["EVENT_TCP_FACTS"]
JIFFIES_WRAP = 1 << 32

# States a socket reaches only after the peer's FIN arrived.
FIN_STATES = ("CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT")
# The errno an application gets from a reset received in each state (tcp_reset() in net/ipv4/tcp_input.c).
RESET_ERRNO = {"SYN_SENT": "ECONNREFUSED", "CLOSE_WAIT": "EPIPE", "CLOSE": ""}


# ---- the kernel's clock tick: lsndtime and lrcvtime are in jiffies ----

def config_hz(release=None, boot="/boot/config-", proc="/proc/config.gz"):
    """CONFIG_HZ of the running kernel from /boot/config-<release> or /proc/config.gz, or None."""
    release = release or platform.release()
    for path, opener in ((boot + release, open), (proc, gzip.open)):
        try:
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1])
        except (OSError, ValueError, EOFError):
            continue
    return None


def _timer_list_jiffies(path="/proc/timer_list"):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("jiffies:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def measured_hz(wait=0.2):
    """The tick rate measured from /proc/timer_list's jiffies over `wait` seconds, rounded to the nearest rate
    Linux offers (100, 250, 300, 1000); None where it cannot be read."""
    t0, j0 = time.monotonic(), _timer_list_jiffies()
    if j0 is None:
        return None
    time.sleep(wait)
    t1, j1 = time.monotonic(), _timer_list_jiffies()
    if j1 is None or t1 <= t0:
        return None
    rate = ((j1 - j0) % JIFFIES_WRAP) / (t1 - t0)
    return min((100, 250, 300, 1000), key=lambda hz: abs(hz - rate))


def kernel_hz():
    hz = config_hz()
    if hz is None:
        hz = measured_hz()
        if hz is None:
            log.warning("CONFIG_HZ is unknown (no /boot/config-%s, /proc/config.gz or /proc/timer_list): error "
                        "events carry no idle times and errnomon_tcp_reset_idle_seconds is not counted", platform.release())
        else:
            log.info("CONFIG_HZ not in the kernel config: measured %d", hz)
    return hz


# ---- explanations ----

Rule = collections.namedtuple("Rule", "name facts when says")


def _seconds(value):
    return "%.1f" % value if value < 10 else "%.0f" % value


# One entry per rule, tried in order: the first whose `when` holds explains the event. `facts`: the event fields
# the rule reads (docs/errors.md lists them). `says` is formatted with the event's fields and these helpers:
# {idle} the silence before it (idle_recv_s), {fin_before} fin_before_s, {peer} remote:remote_port, {reset_by}
# who on this host reset the connection (the event's peer, see Peers), {idle_text} " that forgot the connection
# after N s idle" when the silence was at least IDLE_TIMEOUT_MIN_S, else "".
IDLE_TIMEOUT_MIN_S = 1.0   # a reset that answers the first send after at least this long a silence
ANSWERED_SEND_S = 1.0      # ... sent at most this long before the reset
RESET_STATES = ("ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2")


def ttl_mismatch(e):
    """A reset that arrived with another TTL (hop limit) than the peer's handshake segment: it took another way."""
    rst, peer = e.get("rst_ttl"), e.get("peer_ttl")
    return bool(rst and peer and rst != peer)


RULES = (
    Rule("connect_refused", ("kind", "errno", "remote", "remote_port"),
         lambda e: e["kind"] in ("connect_failed", "reset_received") and e["errno"] == "ECONNREFUSED",
         "connection refused: nothing listens on {peer}"),
    Rule("connect_timeout", ("kind", "errno", "retrans"),
         lambda e: e["kind"] == "connect_failed" and e["errno"] == "ETIMEDOUT" and e["retrans"] is not None,
         "connect timed out after {retrans} retransmissions: no answer from {peer} (a firewall dropping SYNs, or "
         "the host is down)"),
    Rule("connect_unreachable", ("kind", "errno"),
         lambda e: e["kind"] == "connect_failed" and e["errno"] in ("EHOSTUNREACH", "ENETUNREACH"),
         "connect failed, {errno}: no route to {peer} (an ICMP error from a router or the host)"),
    Rule("reset_by_middlebox", ("kind", "errno", "rst_ttl", "peer_ttl"),
         lambda e: (e["kind"] == "reset_received" or e["kind"] == "socket_error" and e["errno"] in PEER_ERRNOS)
         and ttl_mismatch(e),
         "RST TTL {rst_ttl}, peer's {peer_ttl}: sent by a middlebox, not by {peer} (a firewall, NAT or load "
         "balancer between the hosts{idle_text})"),
    Rule("stale_keepalive", ("kind", "fin_received", "fin_before_s"),
         lambda e: e["kind"] in ("reset_received", "socket_error") and e["fin_received"],
         "peer had closed {fin_before} s earlier: a stale keep-alive connection (the peer's idle timeout is "
         "shorter than ours; reused after its FIN)"),
    Rule("reset_by_host_peer", ("kind", "errno", "peer"),
         lambda e: e["peer"] is not None and (e["kind"] == "reset_received"
                                              or e["kind"] == "socket_error" and e["errno"] in PEER_ERRNOS),
         "{reset_by}"),
    Rule("idle_timeout", ("kind", "errno", "state", "idle_recv_s", "idle_send_s"),
         lambda e: (e["kind"] == "reset_received" and e["state"] in RESET_STATES
                    or e["kind"] == "socket_error" and e["errno"] in ("ECONNRESET", "EPIPE"))
         and e["idle_recv_s"] is not None and e["idle_recv_s"] >= IDLE_TIMEOUT_MIN_S
         and e["idle_send_s"] is not None and e["idle_send_s"] <= ANSWERED_SEND_S,
         "reset after {idle} s idle: an idle timeout near {idle} s between the hosts (a NAT, firewall or load "
         "balancer forgot the connection)"),
    Rule("unread_data", ("kind", "state", "fin_received"),
         lambda e: e["kind"] == "reset_received" and e["state"] in RESET_STATES and not e["fin_received"],
         "peer closed with unread data: it reset the connection instead of closing it (it exited, crashed or "
         "closed before reading what it was sent, or closed with SO_LINGER 0)"),
    Rule("reset_by_peer", ("kind", "errno"),
         lambda e: e["kind"] == "socket_error" and e["errno"] == "ECONNRESET",
         "connection reset by {peer}"),
    Rule("write_after_close", ("kind", "errno"),
         lambda e: e["kind"] == "socket_error" and e["errno"] == "EPIPE",
         "write after the connection was closed or reset (EPIPE)"),
    Rule("timed_out", ("kind", "errno", "retrans"),
         lambda e: e["kind"] == "socket_error" and e["errno"] == "ETIMEDOUT",
         "connection timed out after {retrans} retransmissions: {peer} stopped answering"),
    Rule("reset_no_socket", ("kind", "reason"),
         lambda e: e["kind"] == "reset_sent" and e["reason"] == "NO_SOCKET",
         "reset sent: a segment from {peer} for no socket (nothing listens on the port, or the connection is "
         "already gone here)"),
    Rule("reset_close_unread", ("kind", "reason"),
         lambda e: e["kind"] == "reset_sent" and e["reason"] in ("TCP_CLOSE", "TCP_ABORT_ON_CLOSE"),
         "reset sent: this host closed the connection with data unread"),
    Rule("reset_sent", ("kind", "reason"),
         lambda e: e["kind"] == "reset_sent",
         "reset sent to {peer}{reason_text}"),
    Rule("other", ("kind", "errno", "state"),
         lambda e: True,
         "{kind} {errno} in {state}"),
)


# What the kernel's reset reasons (tcp_send_reset, 6.10+) mean, said of the end that sent the reset.
RESET_REASON_TEXT = {
    "NO_SOCKET": "no socket for it",
    "TCP_ABORT_ON_CLOSE": "it closed the connection with data unread",
    "TCP_ABORT_ON_DATA": "data arrived after it had closed",
    "TCP_ABORT_ON_LINGER": "its FIN_WAIT2 linger time ran out",
    "TCP_ABORT_ON_MEMORY": "out of memory for orphaned sockets",
    "TCP_DISCONNECT_WITH_DATA": "it disconnected with data unread",
    "TCP_KEEPALIVE_TIMEOUT": "its keep-alive probes went unanswered",
    "TCP_STATE": "it aborted the connection, e.g. a close with SO_LINGER 0",
    "TCP_TIMEWAIT_SOCKET": "a segment for a connection in TIME_WAIT",
}


def reset_by(peer):
    """Who on this host reset the connection, and the reason the kernel gave: a peer of Peers."""
    reason = peer["reason"]
    text = RESET_REASON_TEXT.get(reason, "")
    if peer["comm"]:
        who = "reset by %s[%d] on this host" % (peer["comm"], peer["pid"])
    else:
        who = "reset by this host's kernel"  # no process context: a segment for no socket, a time-wait socket
        if text and reason in ("NO_SOCKET", "TCP_TIMEWAIT_SOCKET"):
            return "%s: %s" % (who, text)
    if not reason:
        return who
    return "%s (%s: %s)" % (who, reason, text) if text else "%s (%s)" % (who, reason)


def explain(event):
    """The sentence of the first rule that holds for the event (a dict of the /errors schema)."""
    for rule in RULES:
        if rule.when(event):
            return format_rule(rule, event)
    return ""


def format_rule(rule, event):
    remote = event["remote"]
    host = "[%s]" % remote if ":" in remote else remote or "?"
    fields = dict(event)
    fields.update(  # {peer} in a rule's text is the remote end's address, not the event's peer field
        peer="%s:%d" % (host, event["remote_port"]) if event["remote_port"] else host,
        idle=_seconds(event["idle_recv_s"] or 0.0), fin_before=_seconds(event["fin_before_s"] or 0.0),
        reset_by=reset_by(event["peer"]) if event.get("peer") else "",
        reason_text=(" (%s)" % event["reason"]) if event["reason"] else "",
        idle_text=(" that forgot the connection after %s s idle" % _seconds(event["idle_recv_s"])
                   if (event["idle_recv_s"] or 0.0) >= IDLE_TIMEOUT_MIN_S else ""))
    return rule.says.format(**fields)


# ---- decoding ----

def address(family, raw):
    """An address as text; "" when unknown (all zero: not read, or a socket that never had one)."""
    addr = remote_address(family, raw) if any(raw) else None
    return "" if addr is None else str(addr)


class Decoder:
    """A ring record (bytes) -> a dict of the /errors schema, without seq, labels and explanation."""

    def __init__(self, hz, reasons=None):
        self.hz = hz
        self.reasons = reasons or {}

    def __call__(self, raw, wall_minus_mono):
        ev = abi.Event.from_buffer_copy(raw)
        kind = abi.EVENT_KINDS.get(ev.kind, "unknown")
        state = TCP_STATES.get(ev.state, "") if ev.state else ""
        tcp = bool(ev.flags & TCP_FACTS)
        # before the handshake completes, lsndtime and lrcvtime hold nothing of this connection
        timed = tcp and state not in ("SYN_SENT", "SYN_RECV") and kind != "connect_failed"
        at = ev.ktime_ns / 1e9
        errno, reason = "", ""
        if kind in ("socket_error", "connect_failed"):
            errno = errno_name(ev.code)
        elif kind == "reset_received":
            errno = RESET_ERRNO.get(state, "ECONNRESET")
        elif kind == "reset_sent":
            reason = self.reasons.get(ev.code) or KNOWN_RESETS.get(ev.code, "")
        fin_seen = ev.fin_ns != 0 and ev.fin_ns <= ev.ktime_ns
        fin = fin_seen or state in FIN_STATES
        return {
            "time": round(at + wall_minus_mono, 6), "ktime_s": at, "kind": kind, "pid": ev.tgid, "tid": ev.tid,
            "comm": ev.comm.decode("utf-8", "replace"), "cgroup": ev.cgroup,
            "op": OPS.get(ev.op, "") if kind in ("socket_error", "connect_failed") else "",
            "errno": errno, "reason": reason, "family": FAMILIES.get(ev.family, ""),
            "local": address(ev.family, ev.local), "local_port": ev.local_port,
            "remote": address(ev.family, ev.remote), "remote_port": ev.remote_port, "port": ev.port,
            "state": state,
            "age_s": round((ev.ktime_ns - ev.established_ns) / 1e9, 3)
            if ev.established_ns and ev.established_ns <= ev.ktime_ns else None,
            "idle_send_s": self._idle(ev.jiffies, ev.lsndtime) if timed else None,
            "idle_recv_s": self._idle(ev.jiffies, ev.lrcvtime) if timed else None,
            "bytes_sent": ev.bytes_sent if tcp else None,
            # the peer's FIN takes a sequence number, which tcp_sock.bytes_received counts as a byte
            "bytes_received": max(0, ev.bytes_received - fin) if tcp else None,
            "retrans": ev.total_retrans if tcp else None,
            "srtt_ms": round(ev.srtt_us / 1000.0, 3) if tcp else None,
            "fin_received": fin,
            "fin_before_s": round((ev.ktime_ns - ev.fin_ns) / 1e9, 3) if fin_seen else None,
            # the reset's TTL (hop limit) and the peer's handshake segment's; None: not seen (needs kprobes)
            "rst_ttl": ev.rst_ttl or None, "peer_ttl": ev.peer_ttl or None,
        }

    def _idle(self, now, then):
        if not self.hz:
            return None
        return round(((now - then) % JIFFIES_WRAP) / self.hz, 3)


# ---- the kept events ----

FIELDS = ("seq", "time", "kind", "pid", "tid", "comm", "labels", "op", "errno", "reason", "family", "local",
          "local_port", "remote", "remote_port", "port", "state", "age_s", "idle_send_s", "idle_recv_s",
          "bytes_sent", "bytes_received", "retrans", "srtt_ms", "fin_received", "fin_before_s", "rst_ttl",
          "peer_ttl", "peer", "explanation")
# An event is kept as a tuple of these (the explanation is made when it is served): a dict of them took 1.6 KiB,
# 15 MiB for the default events.keep; the tuple, its strings interned and its labels shared, about a third.
STORED = FIELDS[:-1]
AT = {name: i for i, name in enumerate(STORED)}
_INTERNED = tuple(AT[name] for name in ("kind", "comm", "op", "errno", "reason", "family", "local", "remote",
                                          "state"))
LABEL_CACHE = 1024  # owners whose labels are shared between their events


# ---- the other end, when it is on this host ----

PEER_ERRNOS = ("ECONNRESET", "EPIPE")  # the socket errors a reset leads to
PEERS_KEEP = 4096    # resets sent that Peers remembers ...
PEERS_AGE_S = 10.0   # ... for this long
AGE_ROUNDING_S = 0.001  # age_s is rounded to milliseconds
RESET_DELIVERY_S = 0.1  # a reset this host sent reaches its other end on this host within this (microseconds)


class Peers:
    """Resets this host sent, by connection, to name the other end of a connection this host was reset on.

    On one host the sender's reset_sent and the receiver's reset_received come on the ring microseconds apart,
    with the 4-tuple reversed, in either order: a reset for a segment (tcp_v4_send_reset) is traced before it
    is sent, an aborting close's (tcp_send_active_reset) after, when loopback has already delivered it and the
    receiver's application may already have read its ECONNRESET. The application may also read its error
    (socket_error ECONNRESET or EPIPE) much later. An event of either kind gets the sender as "peer" (its pid,
    comm, labels and the kernel's reason) when it follows a reset_sent of its reversed 4-tuple by at most
    PEERS_AGE_S, or precedes one by at most RESET_DELIVERY_S; else (the reset came from another host or a
    middlebox, the rate limit dropped the reset_sent, or it is older) "peer" is None. Never a wrong one: a
    reset_received takes only a reset_sent at most RESET_DELIVERY_S from it that no reset_received took yet,
    and no event joins a reset sent before its connection was established (its age_s). Sockets in different
    network namespaces with the same 4-tuple within those bounds cannot be told apart (events carry no
    namespace)."""

    def __init__(self, keep=PEERS_KEEP, age=PEERS_AGE_S):
        self.keep, self.age = keep, age
        # (family, local, local_port, remote, remote_port) of the sender -> [ktime_s, peer, taken by a reset]
        self.sent = collections.OrderedDict()
        # the receiver's events that found no reset sent yet, by the sender's 4-tuple -> [(ktime_s, event)]
        self.waiting = collections.OrderedDict()

    def __call__(self, e, at):
        """Sets e["peer"]; e: an event of the /errors schema with its labels and seq, at: its kernel time (s).
        Returns the earlier events (dicts) this one is the peer of: a reset_sent traced after its delivery."""
        e["peer"] = None
        kind = e["kind"]
        if kind == "reset_sent":
            return self._sent(e, at)
        if kind != "reset_received" and not (kind == "socket_error" and e["errno"] in PEER_ERRNOS):
            return ()
        key = _connection(e["family"], e["remote"], e["remote_port"], e["local"], e["local_port"])
        if key is None:
            return ()
        sent = self.sent.get(key)
        if sent is not None and at - sent[0] > self.age:
            del self.sent[key]
            sent = None
        if sent is not None and self._joins(e, at, sent):
            e["peer"] = sent[1]
        else:
            self._forget(self.waiting, at, RESET_DELIVERY_S, lambda events: events[-1][0])
            self.waiting.setdefault(key, []).append((at, e))
            self.waiting.move_to_end(key)
            while len(self.waiting) > self.keep:
                self.waiting.popitem(last=False)
        return ()

    def _sent(self, e, at):
        self._forget(self.sent, at, self.age)
        key = _connection(e["family"], e["local"], e["local_port"], e["remote"], e["remote_port"])
        if key is None:
            return ()
        self.sent.pop(key, None)
        sent = self.sent[key] = [at, {"pid": e["pid"], "comm": e["comm"], "labels": e["labels"],
                                      "reason": e["reason"]}, False]
        while len(self.sent) > self.keep:
            self.sent.popitem(last=False)
        joined = []
        for then, earlier in self.waiting.pop(key, ()):
            if at - then <= RESET_DELIVERY_S and self._joins(earlier, at, sent, before=True):
                earlier["peer"] = sent[1]
                joined.append(earlier)
        return joined

    @staticmethod
    def _joins(e, at, sent, before=False):
        """Whether the receiver's event e (at: its time) is of this reset sent (before: e came first)."""
        sent_at = sent[0]
        if not before and at < sent_at:
            return False
        if e["age_s"] is not None and sent_at < at - e["age_s"] - AGE_ROUNDING_S:
            return False  # a reset of an earlier connection with this 4-tuple
        if e["kind"] == "reset_received":
            if sent[2] or abs(at - sent_at) > RESET_DELIVERY_S:
                return False
            sent[2] = True
        return True

    @staticmethod
    def _forget(table, now, age, time_of=lambda entry: entry[0]):
        """Drops the entries older than age from the front of table (the least recently set first)."""
        while table and now - time_of(next(iter(table.values()))) > age:
            table.popitem(last=False)


def _connection(family, local, local_port, remote, remote_port):
    if not (family and local and local_port and remote and remote_port):
        return None  # not a whole 4-tuple: nothing to join by
    return family, local, local_port, remote, remote_port


class EventLog:
    """The last `keep` events, numbered from 1, newest last. Thread-safe: the main loop adds, HTTP reads.

    labels(cgroup, pid) -> {name: value}: the extra labels of the metrics (Aggregator.extra_labels).
    dropped() -> {reason: n}: the kernel's counts of events not delivered."""

    def __init__(self, keep, labels=None, dropped=None):
        self.lock = threading.Lock()
        self.events = collections.deque(maxlen=keep)
        self.seq = 0
        self.labels = labels or (lambda cgroup, pid: {})
        self.dropped = dropped or (lambda: {reason: 0 for reason in abi.EVENT_DROP_REASONS})
        self._labels = {}  # (cgroup, pid) -> the labels dict its events share (never changed once made)
        self.peers = Peers()

    @property
    def keep(self):
        return self.events.maxlen

    def configure(self, keep):
        """A reload: events.keep, and labels made anew (the label config may have changed)."""
        with self.lock:
            if keep != self.events.maxlen:
                self.events = collections.deque(self.events, maxlen=keep)
        self._labels = {}

    def _labels_of(self, cgroup, pid):
        key = (cgroup, pid)
        labels = self._labels.get(key)
        if labels is None:
            if len(self._labels) >= LABEL_CACHE:
                self._labels = {}
            labels = self._labels[key] = self.labels(cgroup, pid)
        return labels

    def add(self, decoded):
        """decoded: dicts from Decoder, in the ring's order; numbered, labelled and joined to their peers here.
        Only the main loop adds: the numbers are given before the lock is taken."""
        rows, late = [], []
        for i, e in enumerate(decoded):
            e["labels"] = self._labels_of(e.pop("cgroup"), e["pid"])
            e["seq"] = self.seq + 1 + i
            late.extend(earlier for earlier in self.peers(e, e.pop("ktime_s")) if earlier["seq"] <= self.seq)
        for e in decoded:
            row = [e[name] for name in STORED]
            for i in _INTERNED:
                row[i] = sys.intern(row[i])
            rows.append(tuple(row))
        with self.lock:
            for row in rows:
                self.events.append(row)
            self.seq += len(rows)
            for e in late:  # an event of an earlier batch, kept already: its peer came in this one
                at = e["seq"] - self.events[0][0] if self.events else -1
                if 0 <= at < len(self.events) and self.events[at][0] == e["seq"]:
                    row = self.events[at]
                    self.events[at] = row[:AT["peer"]] + (e["peer"],) + row[AT["peer"] + 1:]

    def query(self, f):
        """The /errors answer for a Filter."""
        with self.lock:
            rows, last_seq = list(self.events), self.seq
        kept = len(rows)
        if f.after is not None:
            rows = [r for r in rows if r[0] > f.after]
        rows = [r for r in rows if f.match(r)]
        # following (after=): the oldest new ones first, so a follower misses none; else the newest
        rows = rows[:f.limit] if f.after is not None else rows[-f.limit:]
        return {"events": [served(r) for r in rows], "kept": kept, "dropped": dict(self.dropped()),
                "last_seq": last_seq}


def served(row):
    e = dict(zip(STORED, row))
    e["explanation"] = explain(e)
    return e


# ---- GET /errors filters ----

class FilterError(Exception):
    """One line: the parameter, and the form it takes."""


PARAMS = ("comm", "remote", "port", "errno", "since", "after", "limit", "format", "refresh")
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_LIMIT = 1000


class Filter:
    def __init__(self, comm=None, remote=None, port=None, errno=None, since=None, after=None,
                 limit=DEFAULT_LIMIT):
        self.comm, self.remote, self.port, self.errno = comm, remote, port, errno
        self.since, self.after, self.limit = since, after, limit
        self.format = None  # "html" or "json": the answer's form, else the client's Accept decides
        self.refresh = None  # seconds: the HTML page reloads itself
        self.given = {}  # the query as given, echoed into the HTML page's form
        self._inside = {}  # remote -> inside self.remote

    def match(self, row):
        """row: an event as EventLog keeps it (a tuple in STORED order)."""
        if self.comm is not None and row[AT["comm"]] != self.comm:
            return False
        if self.port is not None and row[AT["port"]] != self.port:
            return False
        if self.errno is not None and row[AT["errno"]] != self.errno:
            return False
        if self.since is not None and row[AT["time"]] < self.since:
            return False
        if self.remote is not None:
            remote = row[AT["remote"]]
            inside = self._inside.get(remote)
            if inside is None:
                inside = self._inside[remote] = self._in_remote(remote)  # few peers, many events: once each
            if not inside:
                return False
        return True

    def _in_remote(self, text):
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return False
        return addr.version == self.remote.version and addr in self.remote


def parse_filters(query, keep, now=None):
    """A Filter from a query string; FilterError for a bad or unknown parameter."""
    now = time.time() if now is None else now
    try:
        params = parse_qs(query or "", keep_blank_values=True, strict_parsing=False)
    except ValueError as e:
        raise FilterError("bad query string (%s): use name=value pairs joined by &" % e)
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise FilterError("unknown parameter %s: the filters are %s" % (ascii(unknown[0]), ", ".join(PARAMS)))
    values = {}
    for name, given in params.items():
        if len(given) > 1:
            raise FilterError("%s given %d times: give each filter once" % (name, len(given)))
        values[name] = given[0]
    f = Filter()
    if "comm" in values:
        if not values["comm"] or len(values["comm"].encode()) >= abi.COMM_LEN:
            raise FilterError("comm: expected a process name of 1 to %d bytes, as ps -o comm shows it"
                              % (abi.COMM_LEN - 1))
        f.comm = values["comm"]
    if "remote" in values:
        try:
            f.remote = ipaddress.ip_network(values["remote"], strict=False)
        except ValueError:
            raise FilterError("remote: %s is not an IP address or CIDR: use e.g. remote=10.0.0.5, "
                              "remote=10.0.0.0/8 or remote=2001:db8::/32" % ascii(values["remote"]))
    if "port" in values:
        f.port = _integer(values["port"], "port", 1, 65535, "a service port from 1 to 65535, e.g. port=443")
    if "errno" in values:
        f.errno = _errno(values["errno"])
    if "since" in values:
        f.since = _since(values["since"], now)
    if "after" in values:
        f.after = _integer(values["after"], "after", 0, 2 ** 63, "a seq number (0 or more) from an earlier "
                           "answer: events with a higher seq")
    if "limit" in values:
        f.limit = _integer(values["limit"], "limit", 1, keep, "a number of events from 1 to %d (events.keep)"
                           % keep)
    else:
        f.limit = min(DEFAULT_LIMIT, keep)
    if "format" in values:
        if values["format"] not in ("html", "json"):
            raise FilterError("format: %s is not html or json (without it, a browser gets HTML, others JSON)"
                              % ascii(values["format"]))
        f.format = values["format"]
    if "refresh" in values and values["refresh"]:
        f.refresh = _integer(values["refresh"], "refresh", 1, 3600, "a number of seconds from 1 to 3600 after "
                             "which the HTML page reloads itself")
    f.given = values
    return f


def _integer(text, name, low, high, form):
    if not re.fullmatch(r"\d{1,19}", text) or not low <= int(text) <= high:
        raise FilterError("%s: %s is not %s" % (name, ascii(text), form))
    return int(text)


def _errno(text):
    if re.fullmatch(r"\d{1,5}", text):
        return errno_name(int(text))
    name = text.upper()
    if name in errno_mod.errorcode.values():
        return name
    raise FilterError("errno: %s is not an errno: use a name like ECONNRESET or its number like 104" % ascii(text))


def _since(text, now):
    m = _DURATION.fullmatch(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"\d{1,12}(?:\.\d*)?", text):
        return float(text)
    raise FilterError("since: %s is not a time: use unix seconds (since=1765000000) or how long ago "
                      "(since=30s, 5m, 1h)" % ascii(text))


def app(log_):
    """The WSGI app of GET /errors."""
    def errors(environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET,HEAD"),
                                                      ("Content-Type", "text/plain; charset=utf-8")])
            return [("%s is not answered here: use GET\n" % ascii(method)).encode()]
        try:
            f = parse_filters(environ.get("QUERY_STRING", ""), log_.keep)
        except FilterError as e:
            start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8")])
            return [("%s\n" % e).encode()]
        payload = log_.query(f)
        if eventview.wants_html(environ.get("HTTP_ACCEPT"), f.format):
            body = eventview.html_page(payload, f.given, environ.get("SCRIPT_NAME", "") + "/errors").encode()
            kind = "text/html; charset=utf-8"
        else:
            body = json.dumps(payload, separators=(",", ":")).encode()
            kind = "application/json"
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))), ("Vary", "Accept")])
        return [body]
    return errors


class Reader:
    """Moves records from the kernel's ring into the EventLog; the main loop calls it at every wake-up."""

    def __init__(self, ring, decoder, log_, prepare=None):
        self.ring = ring
        self.decoder = decoder
        self.log = log_
        self.prepare = prepare  # called with the events' cgroups before labelling (pod files read outside locks)
        self.last = time.monotonic()  # the last read

    def __call__(self):
        self.last = time.monotonic()
        records = self.ring.read()
        if not records:
            return 0
        offset = time.time() - time.monotonic()
        decoded = [self.decoder(r, offset) for r in records]
        if self.prepare is not None:
            self.prepare({e["cgroup"] for e in decoded})
        self.log.add(decoded)
        return len(decoded)
