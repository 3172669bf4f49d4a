"""Label sets, remote grouping and the series budget: from decoded events to monotonic counters."""

import fnmatch
import ipaddress
import sys
import threading
import time

# The default labels of each metric, in order (see README: metrics contract).
METRIC_LABELS = {
    "socket_errors": ("errno", "op", "comm", "remote", "port"),
    "socket_error_reports": ("errno", "comm", "remote", "port"),
    "tcp_resets_received": ("comm", "remote", "port", "state"),
    "tcp_resets_sent": ("comm", "remote", "port", "reason"),
    "tcp_fins_sent": ("comm", "remote", "port"),
    "tcp_fins_received": ("comm", "remote", "port"),
    "sigpipe": ("comm", "action"),
    "connect_failures": ("errno", "comm", "remote", "port"),
    "listen_drops": ("comm", "port"),
    # a histogram (errnomon_tcp_reset_idle_seconds): one series per bucket (le: its bound, "+Inf", or "sum": the
    # seconds summed, in ms), each counting the resets in that bucket alone; the collector adds them up
    "tcp_reset_idle": ("comm", "port", "le"),
}
HISTOGRAMS = ("tcp_reset_idle",)
OTHER = "other"
# Labels whose values are not from a small fixed set: folded to "other" when even the overflow is full.
OPEN_LABELS = ("comm", "remote", "port", "pid", "unit", "namespace", "pod", "container")
POD_LABELS = ("namespace", "pod", "container")
# Peer labels remembered between drains: a label costs ~2 us to compute, an entry ~200 bytes to keep.
CACHE_SIZE = 2048


class RemoteGrouper:
    """Peer address -> label value: a named group (first match), else the address shortened to a prefix; a
    unix socket's remote (a str) -> the first group with a matching path pattern, else itself.

    The cache holds what repeats between drains (a few busy peers); it is cleared when full. It was 65536
    entries: with many distinct peers it grew by ~10 MiB of address objects and strings before each
    clear, which showed as RSS climbing with peer churn while the series count stayed fixed."""

    def __init__(self, groups=(), ipv4_prefix=32, ipv6_prefix=128, cache_size=CACHE_SIZE):
        self.groups = groups
        self.prefix = {4: ipv4_prefix, 6: ipv6_prefix}
        self.cache = {}
        self.cache_size = cache_size

    def __call__(self, addr):
        if addr is None:
            return ""
        label = self.cache.get(addr)
        if label is None:
            label = self._label(addr)
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            self.cache[addr] = label
        return label

    def _label(self, addr):
        if isinstance(addr, str):  # a unix socket's remote (decode.UnixAddress): its path, or a group's name
            for group in self.groups:
                if any(fnmatch.fnmatchcase(addr, pattern) for pattern in group.paths):
                    return group.name
            return str(addr)
        for group in self.groups:
            for net in group.networks:
                if net.version == addr.version and addr in net:
                    return group.name
        prefix = self.prefix[addr.version]
        if prefix == addr.max_prefixlen:
            return str(addr)
        return str(ipaddress.ip_network("%s/%d" % (addr, prefix), strict=False))


class Series:
    __slots__ = ("value", "updated")

    def __init__(self, now):
        self.value = 0
        self.updated = now


class Aggregator:
    """Monotonic counters per metric and label set, bounded by a per-metric budget. Thread-safe."""

    def __init__(self, config, unit_of=None, clock=time.monotonic, pod_of=None):
        self.lock = threading.Lock()
        self.clock = clock
        self.unit_of = unit_of or (lambda cgroup, pid: "")
        self.pod_of = pod_of or (lambda cgroup: ("", "", ""))  # reads a cache only: called under the lock
        self.series = {m: {} for m in METRIC_LABELS}
        self.overflow = {m: 0 for m in METRIC_LABELS}
        self.configure(config)

    def configure(self, config):
        """Apply a (re)loaded config. Existing series and counts are kept."""
        with self.lock:
            self.config = config
            self.grouper = RemoteGrouper(config.groups, config.ipv4_prefix, config.ipv6_prefix)
            extra = (("pid",) if config.pid_label else ()) + (("unit",) if config.unit_label else ())
            extra += POD_LABELS if config.pod_labels else ()
            labels = {m: names + extra for m, names in METRIC_LABELS.items()}
            if getattr(self, "labels", labels) != labels:
                self._rekey(labels)
            self.labels = labels
            self.reserve = max(10, config.budget // 10)

    def _rekey(self, labels):
        """Carry counts over to a changed label set: dropped labels merge series, added ones start empty."""
        for metric, table in self.series.items():
            old = self.labels[metric]
            index = [old.index(name) if name in old else None for name in labels[metric]]
            merged = {}
            for key, s in table.items():
                new_key = tuple("" if i is None else key[i] for i in index)
                into = merged.get(new_key)
                if into is None:
                    merged[new_key] = s
                else:
                    into.value += s.value
                    into.updated = max(into.updated, s.updated)
            self.series[metric] = merged

    def label_names(self, metric):
        return self.labels[metric]

    def _values(self, event):
        v = {
            "errno": event.errno, "op": event.op, "comm": event.comm, "remote": self.grouper(event.remote),
            "port": str(event.port) if event.port else "", "state": event.state, "reason": event.reason,
            "action": event.action, "le": event.reason,
        }
        v.update(self._extra(event.cgroup, event.pid))
        return v

    def _extra(self, cgroup, pid):
        v = {}
        if self.config.pid_label:
            v["pid"] = str(pid) if pid else ""
        if self.config.unit_label:
            v["unit"] = self.unit_of(cgroup, pid)
        if self.config.pod_labels:
            v.update(zip(POD_LABELS, self.pod_of(cgroup)))
        return v

    def extra_labels(self, cgroup, pid):
        """The labels the config adds to every metric (pid, unit, namespace/pod/container) for an owner."""
        with self.lock:
            return self._extra(cgroup, pid)

    def add(self, events):
        """events: iterable of (Event, count)."""
        now = self.clock()
        with self.lock:
            for event, n in events:
                metric = event.metric
                names = self.labels[metric]
                values = self._values(event)
                key = tuple(values[name] for name in names)
                table = self.series[metric]
                s = table.get(key)
                if s is None:
                    s = self._new_series(metric, names, values, key, n, now)
                s.value += n
                s.updated = now

    def _new_series(self, metric, names, values, key, n, now):
        table = self.series[metric]
        budget = self.config.budget
        if len(table) < budget:
            # A kept key shares its repeated values (comm, port, errno...): each is one string for every
            # series, not a copy per series (about 100 bytes a series saved, docs/BENCHMARKS.md, Memory).
            key = tuple(map(sys.intern, key))
            s = table[key] = Series(now)
            return s
        # Over budget: fold the peer, then, once the reserve is spent too, every open label.
        self.overflow[metric] += n
        fold = ("remote",) if "remote" in names else ("comm",)
        key = tuple(OTHER if name in fold else values[name] for name in names)
        s = table.get(key)
        if s is None and len(table) >= budget + self.reserve:
            key = tuple(OTHER if name in OPEN_LABELS else values[name] for name in names)
            s = table.get(key)
        if s is None:
            s = table[key] = Series(now)
        return s

    def expire(self):
        """Drop series that have not increased for the configured ttl."""
        ttl = self.config.ttl
        if not ttl:
            return 0
        cutoff = self.clock() - ttl
        dropped = 0
        with self.lock:
            for metric, table in self.series.items():
                if metric in HISTOGRAMS:  # a histogram's buckets go together, or its sums would stop adding up
                    at = self.labels[metric].index("le")
                    newest = {}
                    for k, s in table.items():
                        g = k[:at] + k[at + 1:]
                        newest[g] = max(newest.get(g, s.updated), s.updated)
                    stale = [k for k in table if newest[k[:at] + k[at + 1:]] < cutoff]
                else:
                    stale = [k for k, s in table.items() if s.updated < cutoff]
                for k in stale:
                    del table[k]
                dropped += len(stale)
        return dropped

    def rows(self, metric):
        """(label names, [(label values, value)]) of one metric, copied under the lock."""
        with self.lock:
            return self.labels[metric], [(k, s.value) for k, s in self.series[metric].items()]

    def overflow_counts(self):
        with self.lock:
            return dict(self.overflow)

    def snapshot(self):
        """{metric: (label names, [(label values, value)])} and the overflow counts, each metric copied under
        the lock."""
        return {m: self.rows(m) for m in self.series}, self.overflow_counts()
