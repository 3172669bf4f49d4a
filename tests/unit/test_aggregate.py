"""monitor/aggregate.py: label sets, remote grouping, the series budget, ttl expiry and re-keying."""

import ipaddress
import textwrap

import pytest

from monitor import aggregate, config
from monitor.aggregate import METRIC_LABELS, Aggregator, RemoteGrouper
from monitor.decode import Event, UnixAddress

ip = ipaddress.ip_address


def cfg(text=""):
    return config.parse(textwrap.dedent(text))


def event(metric="socket_errors", errno="ECONNRESET", op="send", comm="curl", remote="10.1.2.3", port=443,
          state=None, reason=None, action=None, pid=4242, cgroup=77):
    """An Event as the decoder makes it: only the fields of `metric` set."""
    return Event(
        metric=metric,
        errno=errno if metric in ("socket_errors", "socket_error_reports") else None,
        op=op if metric == "socket_errors" else None,
        comm=comm, remote=ip(remote) if remote else None, port=port,
        state=state if metric == "tcp_resets_received" else None,
        reason=reason if metric == "tcp_resets_sent" else None,
        action=action if metric == "sigpipe" else None,
        pid=pid, cgroup=cgroup,
    )


def table(agg, metric):
    """{label values: value} of one metric from a snapshot."""
    series, _ = agg.snapshot()
    names, rows = series[metric]
    assert all(len(values) == len(names) for values, _ in rows)
    return dict(rows)


def total(agg):
    series, _ = agg.snapshot()
    return sum(value for _, rows in series.values() for _, value in rows)


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


# ---------------------------------------------------------------------------
# label sets


def test_default_metric_labels():
    assert METRIC_LABELS == {
        "socket_errors": ("errno", "op", "comm", "remote", "port"),
        "socket_error_reports": ("errno", "comm", "remote", "port"),
        "tcp_resets_received": ("comm", "remote", "port", "state"),
        "tcp_resets_sent": ("comm", "remote", "port", "reason"),
        "tcp_fins_sent": ("comm", "remote", "port"),
        "tcp_fins_received": ("comm", "remote", "port"),
        "sigpipe": ("comm", "action"),
        "connect_failures": ("errno", "comm", "remote", "port"),
        "listen_drops": ("comm", "port"),
        "tcp_reset_idle": ("comm", "port", "le"),
    }


@pytest.mark.parametrize(
    "text, extra",
    [("", ()), ("labels: {pid: true}", ("pid",)), ("labels: {unit: true}", ("unit",)),
     ("labels: {pid: true, unit: true}", ("pid", "unit"))],
    ids=["default", "pid", "unit", "pid+unit"],
)
def test_label_names(text, extra):
    agg = Aggregator(cfg(text))
    for metric, names in METRIC_LABELS.items():
        assert agg.label_names(metric) == names + extra
    series, _ = agg.snapshot()
    assert {m: names for m, (names, _) in series.items()} == {m: n + extra for m, n in METRIC_LABELS.items()}


@pytest.mark.parametrize(
    "ev, key",
    [
        (event("socket_errors"), ("ECONNRESET", "send", "curl", "10.1.2.3", "443")),
        (event("socket_error_reports", errno="ETIMEDOUT"), ("ETIMEDOUT", "curl", "10.1.2.3", "443")),
        (event("tcp_resets_received", state="ESTABLISHED"), ("curl", "10.1.2.3", "443", "ESTABLISHED")),
        (event("tcp_resets_sent", comm="", reason="NO_SOCKET"), ("", "10.1.2.3", "443", "NO_SOCKET")),
        (event("tcp_fins_sent", port=0), ("curl", "10.1.2.3", "")),
        (event("sigpipe", action="killed", remote=None, port=0), ("curl", "killed")),
    ],
    ids=lambda v: v.metric if isinstance(v, Event) else None,
)
def test_label_values_by_metric(ev, key):
    agg = Aggregator(cfg())
    agg.add([(ev, 3)])
    for metric in METRIC_LABELS:
        assert table(agg, metric) == ({key: 3} if metric == ev.metric else {})


@pytest.mark.parametrize(
    "pid, cgroup, key_tail",
    [(4242, 77, ("4242", "nginx.service")), (0, 0, ("", "")), (1, 5, ("1", ""))],
)
def test_pid_and_unit_labels(pid, cgroup, key_tail):
    units = {77: "nginx.service"}
    agg = Aggregator(cfg("labels: {pid: true, unit: true}"), unit_of=lambda c, pid: units.get(c, ""))
    agg.add([(event("sigpipe", action="handled", pid=pid, cgroup=cgroup), 1)])
    assert table(agg, "sigpipe") == {("curl", "handled") + key_tail: 1}


def test_unit_of_is_not_consulted_when_the_label_is_off():
    def unit_of(cgroup, pid):
        raise AssertionError("unit_of called")
    agg = Aggregator(cfg(), unit_of=unit_of)
    agg.add([(event(), 1)])
    assert total(agg) == 1


def test_counts_add_up():
    agg = Aggregator(cfg())
    a, b = event(remote="10.0.0.1"), event(remote="10.0.0.2")
    agg.add([(a, 2), (b, 5), (a, 3)])
    agg.add([(a, 10)])
    assert table(agg, "socket_errors") == {
        ("ECONNRESET", "send", "curl", "10.0.0.1", "443"): 15,
        ("ECONNRESET", "send", "curl", "10.0.0.2", "443"): 5,
    }
    assert agg.snapshot()[1] == {m: 0 for m in METRIC_LABELS}


def test_add_accepts_a_generator():
    agg = Aggregator(cfg())
    agg.add((event(port=p), 1) for p in (1, 2, 2))
    assert sorted(table(agg, "socket_errors").values()) == [1, 2]


# ---------------------------------------------------------------------------
# remote grouping

GROUPED = """
remote:
  groups:
    - {name: one, cidrs: [10.1.0.0/16]}
    - {name: two, cidrs: [10.0.0.0/8, "fd00::/8"]}
    - {name: loopback, cidrs: [127.0.0.0/8, "::1/128"]}
  ipv4_prefix: 24
  ipv6_prefix: 64
"""


@pytest.mark.parametrize(
    "addr, label",
    [
        ("10.1.2.3", "one"),            # matches both one and two: the first wins
        ("10.2.0.1", "two"),
        ("fd12::1", "two"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("192.168.7.9", "192.168.7.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        (None, ""),
    ],
)
def test_remote_groups_and_prefixes(addr, label):
    agg = Aggregator(cfg(GROUPED))
    agg.add([(event("tcp_fins_sent", remote=addr), 1)])
    assert table(agg, "tcp_fins_sent") == {("curl", label, "443"): 1}


@pytest.mark.parametrize(
    "v4, v6, addr, label",
    [
        (32, 128, "10.1.2.3", "10.1.2.3"),
        (24, 128, "10.1.2.3", "10.1.2.0/24"),
        (0, 128, "10.1.2.3", "0.0.0.0/0"),
        (32, 128, "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        (32, 64, "2001:db8:0:0:1:0:0:1", "2001:db8::/64"),
        (32, 48, "2001:db8:ab:cd::1", "2001:db8:ab::/48"),
    ],
)
def test_remote_grouper_prefixes(v4, v6, addr, label):
    assert RemoteGrouper((), v4, v6)(ip(addr)) == label


def test_remote_grouper_cache_is_bounded():
    grouper = RemoteGrouper((), 24, 128, cache_size=4)
    labels = [grouper(ip("10.0.%d.1" % i)) for i in range(10)]
    assert labels == ["10.0.%d.0/24" % i for i in range(10)]
    assert len(grouper.cache) <= 4


# ---------------------------------------------------------------------------
# the series budget

def test_budget_folds_remotes_into_other():
    n = 5
    agg = Aggregator(cfg("series: {budget: %d}" % n))
    agg.add([(event(remote="10.0.0.%d" % i), 1) for i in range(n)])
    assert len(table(agg, "socket_errors")) == n
    assert agg.snapshot()[1]["socket_errors"] == 0

    agg.add([(event(remote="10.9.0.%d" % i), 2) for i in range(3)])   # three new peers, 2 each
    agg.add([(event(remote="10.0.0.0"), 4)])                          # a series within budget
    rows = table(agg, "socket_errors")
    assert len(rows) == n + 1
    assert rows[("ECONNRESET", "send", "curl", "other", "443")] == 6
    assert rows[("ECONNRESET", "send", "curl", "10.0.0.0", "443")] == 5
    _, overflow = agg.snapshot()
    assert overflow == dict({m: 0 for m in METRIC_LABELS}, socket_errors=6)

    agg.add([(event(remote="10.9.0.0"), 7)])  # still folded: counted in overflow again
    assert table(agg, "socket_errors")[("ECONNRESET", "send", "curl", "other", "443")] == 13
    assert agg.snapshot()[1]["socket_errors"] == 13
    assert total(agg) == n + 4 + 13


def test_budget_is_per_metric():
    agg = Aggregator(cfg("series: {budget: 2}"))
    agg.add([(event(remote="10.0.0.%d" % i), 1) for i in range(3)])
    agg.add([(event("tcp_fins_sent", remote="10.0.0.%d" % i), 1) for i in range(2)])
    assert len(table(agg, "tcp_fins_sent")) == 2
    assert agg.snapshot()[1] == dict({m: 0 for m in METRIC_LABELS}, socket_errors=1)


def test_sigpipe_folds_comm():
    agg = Aggregator(cfg("series: {budget: 2}"))
    agg.add([(event("sigpipe", comm="p%d" % i, action="killed"), 1) for i in range(5)])
    assert table(agg, "sigpipe") == {("p0", "killed"): 1, ("p1", "killed"): 1, ("other", "killed"): 3}
    assert agg.snapshot()[1]["sigpipe"] == 3


@pytest.mark.parametrize("budget, reserve", [(1, 10), (20, 10), (100, 10), (500, 50), (2000, 200)])
def test_reserve(budget, reserve):
    assert Aggregator(cfg("series: {budget: %d}" % budget)).reserve == reserve


def test_open_labels_fold_beyond_the_reserve():
    """10,000 distinct (comm, remote, port) in budget 20: bounded series, no count lost.

    Up to `budget` series are kept as they are. Then each new label set gets remote="other" (one series
    per distinct comm/port here, as all differ) until the table holds budget + reserve. After that every
    open label (comm, remote, port) becomes "other": one more series per distinct combination of the closed
    labels (errno, op), of which this test has exactly one. So at most budget + reserve + 1 = 31 series.
    """
    budget, reserve, events = 20, 10, 10_000
    agg = Aggregator(cfg("series: {budget: %d}" % budget))
    agg.add([(event(comm="c%d" % i, remote=str(ipaddress.IPv4Address(0x0A000000 + i)), port=1 + i % 65535), 1)
             for i in range(events)])
    rows = table(agg, "socket_errors")
    assert len(rows) <= budget + reserve + 1
    assert len(rows) == budget + reserve + 1
    assert rows[("ECONNRESET", "send", "other", "other", "other")] == events - budget - reserve
    assert sum(rows.values()) == events
    assert agg.snapshot()[1]["socket_errors"] == events - budget


def test_open_label_folding_keeps_closed_labels():
    """Bound with several closed label values: budget + reserve + (#errno x #op)."""
    budget, reserve = 20, 10
    errnos, ops = ("ECONNRESET", "EPIPE", "ETIMEDOUT"), ("send", "recv")
    agg = Aggregator(cfg("series: {budget: %d}" % budget))
    agg.add([(event(errno=errnos[i % 3], op=ops[i % 2], comm="c%d" % i, port=i + 1), 1) for i in range(3000)])
    rows = table(agg, "socket_errors")
    assert len(rows) <= budget + reserve + len(errnos) * len(ops)
    assert {k[:2] for k in rows if k[2:] == ("other", "other", "other")} == {(e, o) for e in errnos for o in ops}
    assert sum(rows.values()) == 3000


# ---------------------------------------------------------------------------
# ttl

def test_ttl_expiry():
    clock = Clock(1000.0)
    agg = Aggregator(cfg("series: {ttl: 60s}"), clock=clock)
    agg.add([(event(remote="10.0.0.1"), 1)])
    clock.now = 1030.0
    agg.add([(event(remote="10.0.0.2"), 1)])
    clock.now = 1060.0
    assert agg.expire() == 0                   # exactly ttl old: kept
    clock.now = 1060.5
    assert agg.expire() == 1
    assert list(table(agg, "socket_errors")) == [("ECONNRESET", "send", "curl", "10.0.0.2", "443")]
    agg.add([(event(remote="10.0.0.2"), 1)])   # an increase refreshes the series
    clock.now = 1120.0
    assert agg.expire() == 0
    clock.now = 1200.0
    assert agg.expire() == 1
    assert total(agg) == 0


def test_ttl_zero_keeps_forever():
    clock = Clock(0.0)
    agg = Aggregator(cfg("series: {ttl: 0}"), clock=clock)
    agg.add([(event(), 1)])
    clock.now = 1e9
    assert agg.expire() == 0
    assert total(agg) == 1


def test_expiry_frees_budget():
    clock = Clock(0.0)
    agg = Aggregator(cfg("series: {budget: 1, ttl: 10}"), clock=clock)
    agg.add([(event(remote="10.0.0.1"), 1)])
    clock.now = 11.0
    assert agg.expire() == 1
    agg.add([(event(remote="10.0.0.2"), 1)])
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "10.0.0.2", "443"): 1}


# ---------------------------------------------------------------------------
# reload

def test_configure_pid_label_on_then_off_keeps_totals():
    agg = Aggregator(cfg())
    agg.add([(event(pid=1), 2), (event(pid=2), 3), (event("sigpipe", action="killed", pid=1), 1)])
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "10.1.2.3", "443"): 5}

    agg.configure(cfg("labels: {pid: true}"))
    assert agg.label_names("socket_errors") == METRIC_LABELS["socket_errors"] + ("pid",)
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "10.1.2.3", "443", ""): 5}
    agg.add([(event(pid=7), 4)])
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "10.1.2.3", "443", ""): 5,
                                           ("ECONNRESET", "send", "curl", "10.1.2.3", "443", "7"): 4}
    assert table(agg, "sigpipe") == {("curl", "killed", ""): 1}

    agg.configure(cfg())
    assert agg.label_names("socket_errors") == METRIC_LABELS["socket_errors"]
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "10.1.2.3", "443"): 9}
    assert table(agg, "sigpipe") == {("curl", "killed"): 1}
    assert total(agg) == 10


def test_configure_swapping_pid_for_unit():
    agg = Aggregator(cfg("labels: {pid: true}"), unit_of=lambda c, pid: "u%d" % c)
    agg.add([(event("tcp_fins_sent", pid=1, cgroup=5), 1), (event("tcp_fins_sent", pid=2, cgroup=5), 2)])
    agg.configure(cfg("labels: {unit: true}"))
    assert table(agg, "tcp_fins_sent") == {("curl", "10.1.2.3", "443", ""): 3}
    agg.add([(event("tcp_fins_sent", pid=1, cgroup=5), 1)])
    assert table(agg, "tcp_fins_sent") == {("curl", "10.1.2.3", "443", ""): 3,
                                           ("curl", "10.1.2.3", "443", "u5"): 1}


def test_configure_applies_new_grouping_and_budget():
    agg = Aggregator(cfg())
    agg.add([(event(remote="10.1.2.3"), 1)])
    agg.configure(cfg("remote: {ipv4_prefix: 8}\nseries: {budget: 100}"))
    agg.add([(event(remote="10.1.2.3"), 1)])
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "10.1.2.3", "443"): 1,
                                           ("ECONNRESET", "send", "curl", "10.0.0.0/8", "443"): 1}
    assert agg.reserve == 10


# ---------------------------------------------------------------------------
# snapshot

def test_snapshot_is_a_copy():
    agg = Aggregator(cfg("series: {budget: 1}"))
    agg.add([(event(remote="10.0.0.1"), 1), (event(remote="10.0.0.2"), 1)])
    series, overflow = agg.snapshot()
    agg.add([(event(remote="10.0.0.1"), 5), (event(remote="10.0.0.3"), 1), (event("sigpipe", action="killed"), 1)])
    assert dict(series["socket_errors"][1]) == {("ECONNRESET", "send", "curl", "10.0.0.1", "443"): 1,
                                                ("ECONNRESET", "send", "curl", "other", "443"): 1}
    assert series["sigpipe"][1] == []
    assert overflow["socket_errors"] == 1

    series["socket_errors"][1].clear()
    overflow["socket_errors"] = 99
    assert table(agg, "socket_errors")[("ECONNRESET", "send", "curl", "10.0.0.1", "443")] == 6
    assert agg.snapshot()[1]["socket_errors"] == 2


def test_other_is_a_reserved_constant():
    assert aggregate.OTHER == "other"
    assert aggregate.OTHER in config.RESERVED_GROUP_NAMES


def test_memory_flat_over_distinct_peer_churn():
    """200,000 distinct peers into a budget of 100 series: after warm-up, traced memory (peak included)
    stays within 1 MiB. It grew by ~8 MiB with the grouper's old 65536-entry cache of address objects."""
    import gc
    import tracemalloc
    from monitor.decode import remote_address

    agg = Aggregator(cfg("series: {budget: 100}"), unit_of=lambda c, pid: "")

    def batch(start, n=1000):
        for i in range(start, start + n):
            remote = remote_address(2, (0x0A000000 + i).to_bytes(4, "big"))  # as the decoder makes it
            yield event(comm="churn%d" % (i % 7), remote=None, pid=i)._replace(remote=remote), 1

    tracemalloc.start()
    try:
        peers = 0
        while peers < 20_000:  # warm-up: the budget and its reserve fill, the cache cycles
            agg.add(batch(peers))
            peers += 1000
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        while peers < 220_000:
            agg.add(batch(peers))
            peers += 1000
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1 << 20, (current - base, peak - base)
    assert current - base < 1 << 20
    series, overflow = agg.snapshot()
    assert len(series["socket_errors"][1]) == 100 + 7  # the budget, then remote="other" for each of 7 comms
    assert sum(v for _, v in series["socket_errors"][1]) == 220_000  # every event counted
    assert overflow["socket_errors"] > 0


def test_pod_labels():
    pods = {77: ("shop", "web-0", "nginx")}
    agg = Aggregator(cfg("labels: {pod: true}"), pod_of=lambda c: pods.get(c, ("", "", "")))
    agg.add([(event("sigpipe", action="handled", cgroup=77), 2), (event("sigpipe", action="handled", cgroup=5), 1)])
    assert agg.label_names("sigpipe") == ("comm", "action", "namespace", "pod", "container")
    assert table(agg, "sigpipe") == {("curl", "handled", "shop", "web-0", "nginx"): 2,
                                     ("curl", "handled", "", "", ""): 1}


def test_pod_labels_fold_to_other_over_budget():
    pods = {1: ("a", "p1", "c"), 2: ("a", "p2", "c"), 3: ("a", "p3", "c")}
    agg = Aggregator(cfg("labels: {pod: true}\nseries: {budget: 1}"), pod_of=pods.get)
    agg.reserve = 1
    agg.add([(event("sigpipe", action="handled", cgroup=c), 1) for c in (1, 2, 3)])
    assert table(agg, "sigpipe") == {("curl", "handled", "a", "p1", "c"): 1, ("other", "handled", "a", "p2", "c"): 1,
                                     ("other", "handled", "other", "other", "other"): 1}


PATH_GROUPS = """
remote:
  groups:
    - {name: php, paths: ["/run/php/*.sock"]}
    - {name: app, paths: ["@app-*", "/srv/app/[0-9]*.sock"], cidrs: [10.0.0.0/8]}
"""


@pytest.mark.parametrize(
    "remote, label",
    [
        ("/run/php/php8.2-fpm.sock", "php"),
        ("/run/php/sub/x.sock", "php"),          # fnmatch: * crosses "/"
        ("/run/php.sock", "/run/php.sock"),      # no group: the path itself
        ("@app-1234", "app"),
        ("@other", "@other"),
        ("/srv/app/7.sock", "app"),
        ("/srv/app/x.sock", "/srv/app/x.sock"),
        ("unnamed", "unnamed"),
        ("unknown", "unknown"),
    ],
)
def test_remote_path_groups(remote, label):
    agg = Aggregator(cfg(PATH_GROUPS))
    agg.add([(event(remote=None)._replace(remote=UnixAddress(remote), port=0), 1)])
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", label, ""): 1}


def test_path_groups_leave_addresses_to_cidrs():
    agg = Aggregator(cfg(PATH_GROUPS))
    agg.add([(event(remote="10.9.8.7"), 1), (event(remote="192.0.2.1"), 1)])
    assert table(agg, "socket_errors") == {("ECONNRESET", "send", "curl", "app", "443"): 1,
                                           ("ECONNRESET", "send", "curl", "192.0.2.1", "443"): 1}
