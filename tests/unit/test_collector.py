"""monitor/collector.py: the exported families, exact sample values, and an exposition promtool accepts.

promtool (Debian's prometheus package, installed by `make test`) is required: without it the exposition
check fails rather than skips.
"""

import ipaddress
import platform
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import monitor
from monitor import config
from monitor.aggregate import Aggregator
from monitor.collector import HELP, ErrnoCollector
from monitor.decode import Event

ATTACHED = {"resets_sent": [("tcp:tcp_send_reset", True)], "send_errors": [("sock:sock_send_length", False)],
            "recv_errors": [("fexit:inet_recvmsg", True), ("fexit:inet6_recvmsg", True)]}
DROPS = {"socket_errors": 3, "socket_error_reports": 0, "tcp_resets_received": 0, "tcp_resets_sent": 0,
         "tcp_fins_sent": 0, "sigpipe": 1, "connect_failures": 0}
MISSED = {"tcp:tcp_receive_reset": 0, "syscalls:sys_exit_connect": 4}
ERRNOMON_METRICS = ("socket_errors", "socket_error_reports", "tcp_resets_received", "tcp_resets_sent",
                    "tcp_fins_sent", "sigpipe", "connect_failures", "listen_drops", "tcp_fins_received")


def ev(metric, comm="curl", remote="10.1.2.3", port=443, errno=None, op=None, state=None, reason=None,
       action=None, pid=0, cgroup=0):
    return Event(metric, errno, op, comm, ipaddress.ip_address(remote) if remote else None, port, state, reason,
                 action, pid, cgroup)


EVENTS = [
    (ev("socket_errors", errno="ECONNRESET", op="recv"), 5),
    (ev("socket_errors", errno="ECONNREFUSED", op="connect", remote="::1", port=5432), 2),
    (ev("socket_error_reports", errno="ETIMEDOUT", comm='we"ird\\name'), 1),
    (ev("tcp_resets_received", state="ESTABLISHED"), 4),
    (ev("tcp_resets_sent", comm="", remote="192.0.2.1", port=80, reason="NO_SOCKET"), 7),
    (ev("tcp_fins_sent", port=0), 9),
    (ev("sigpipe", remote=None, port=0, action="killed"), 1),
    (ev("connect_failures", errno="ECONNREFUSED", remote="10.0.0.5", port=5432), 3),
]


class Status:
    def __init__(self):
        self.attached = dict(ATTACHED)
        self.drops = dict(DROPS)
        self.missed = dict(MISSED)
        self.event_drops = {"rate_limit": 5, "ring_full": 2}

    def __call__(self):
        return {"attached": self.attached, "drops": self.drops, "missed": self.missed,
                "event_drops": self.event_drops}


@pytest.fixture
def setup():
    agg = Aggregator(config.parse("series: {budget: 3}"))
    agg.add(EVENTS)
    status = Status()
    registry = CollectorRegistry()
    registry.register(ErrnoCollector(agg, status))
    return registry, agg, status


@pytest.mark.parametrize(
    "name, labels, value",
    [
        ("errnomon_socket_errors_total",
         dict(errno="ECONNRESET", op="recv", comm="curl", remote="10.1.2.3", port="443"), 5),
        ("errnomon_socket_errors_total",
         dict(errno="ECONNREFUSED", op="connect", comm="curl", remote="::1", port="5432"), 2),
        ("errnomon_socket_error_reports_total",
         dict(errno="ETIMEDOUT", comm='we"ird\\name', remote="10.1.2.3", port="443"), 1),
        ("errnomon_tcp_resets_received_total",
         dict(comm="curl", remote="10.1.2.3", port="443", state="ESTABLISHED"), 4),
        ("errnomon_tcp_resets_sent_total", dict(comm="", remote="192.0.2.1", port="80", reason="NO_SOCKET"), 7),
        ("errnomon_tcp_fins_sent_total", dict(comm="curl", remote="10.1.2.3", port=""), 9),
        ("errnomon_sigpipe_total", dict(comm="curl", action="killed"), 1),
        ("errnomon_probe_attached", dict(signal="resets_sent", probe="tcp:tcp_send_reset"), 1),
        ("errnomon_probe_attached", dict(signal="send_errors", probe="sock:sock_send_length"), 0),
        ("errnomon_probe_attached", dict(signal="recv_errors", probe="fexit:inet6_recvmsg"), 1),
        ("errnomon_dropped_total", dict(reason="socket_errors_map_full"), 3),
        ("errnomon_dropped_total", dict(reason="sigpipe_map_full"), 1),
        ("errnomon_dropped_total", dict(reason="tcp_fins_sent_map_full"), 0),
        ("errnomon_series_overflow_total", dict(metric="errnomon_socket_errors_total"), 0),
        ("errnomon_events_dropped_total", dict(reason="rate_limit"), 5),
        ("errnomon_events_dropped_total", dict(reason="ring_full"), 2),
        ("errnomon_series", dict(metric="errnomon_socket_errors_total"), 2),
        ("errnomon_series", dict(metric="errnomon_sigpipe_total"), 1),
        ("errnomon_build_info", dict(version=monitor.__version__, kernel=platform.release()), 1),
    ],
)
def test_sample_values(setup, name, labels, value):
    registry, _, _ = setup
    assert registry.get_sample_value(name, labels) == value


def test_label_names_match_the_aggregator(setup):
    registry, agg, _ = setup
    by_name = {f.name: f for f in registry.collect()}
    for metric in ERRNOMON_METRICS:
        family = by_name["errnomon_" + metric]
        assert family.type == "counter"
        assert family.documentation == HELP[metric]
        for sample in family.samples:
            assert sample.name == "errnomon_%s_total" % metric
            assert tuple(sample.labels) == agg.label_names(metric)


def test_collect_is_fresh_on_every_scrape(setup):
    registry, agg, status = setup
    labels = dict(errno="ECONNRESET", op="recv", comm="curl", remote="10.1.2.3", port="443")
    agg.add([(EVENTS[0][0], 10)])
    status.attached["send_errors"] = [("fexit:inet_sendmsg", True)]
    status.drops["socket_errors"] = 8
    assert registry.get_sample_value("errnomon_socket_errors_total", labels) == 15
    assert registry.get_sample_value("errnomon_probe_attached",
                                     {"signal": "send_errors", "probe": "fexit:inet_sendmsg"}) == 1
    assert registry.get_sample_value("errnomon_probe_attached",
                                     {"signal": "send_errors", "probe": "sock:sock_send_length"}) is None
    assert registry.get_sample_value("errnomon_dropped_total", {"reason": "socket_errors_map_full"}) == 8


def test_series_overflow(setup):
    registry, agg, _ = setup
    agg.add([(ev("socket_errors", errno="EPIPE", op="send", remote="10.0.0.%d" % i), 2) for i in range(4)])
    value = registry.get_sample_value
    # budget 3: 2 series existed, one more fits, three fold into remote="other"
    assert value("errnomon_series_overflow_total", {"metric": "errnomon_socket_errors_total"}) == 6
    assert value("errnomon_socket_errors_total",
                 dict(errno="EPIPE", op="send", comm="curl", remote="other", port="443")) == 6
    assert value("errnomon_series", {"metric": "errnomon_socket_errors_total"}) == 4


def test_empty_aggregator_and_status():
    registry = CollectorRegistry()
    registry.register(ErrnoCollector(Aggregator(config.parse("")), lambda: {"attached": {}, "drops": {}}))
    families = {f.name: f for f in registry.collect()}
    assert sorted(families) == sorted(["errnomon_" + m for m in ERRNOMON_METRICS] + [
        "errnomon_tcp_reset_idle_seconds", "errnomon_probe_attached", "errnomon_probe_missed", "errnomon_dropped", "errnomon_events_dropped",
        "errnomon_series_overflow", "errnomon_series", "errnomon_build_info"])
    assert families["errnomon_socket_errors"].samples == []
    assert [s.value for s in families["errnomon_series"].samples] == [0] * (len(ERRNOMON_METRICS) + 1)


def exposition(registry):
    return generate_latest(registry).decode()


def test_exposition_parses_back(setup):
    registry, _, _ = setup
    families = {f.name: f for f in text_string_to_metric_families(exposition(registry))}
    # The parser names counter families without _total.
    assert {name: f.type for name, f in families.items()} == dict(
        {"errnomon_" + m: "counter" for m in ERRNOMON_METRICS},
        errnomon_tcp_reset_idle_seconds="histogram", errnomon_probe_attached="gauge", errnomon_probe_missed="counter", errnomon_dropped="counter",
        errnomon_events_dropped="counter", errnomon_series_overflow="counter", errnomon_series="gauge", errnomon_build_info="gauge")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("errnomon_socket_error_reports_total", (
        ("comm", 'we"ird\\name'), ("errno", "ETIMEDOUT"), ("port", "443"), ("remote", "10.1.2.3")))] == 1
    assert samples[("errnomon_tcp_resets_sent_total", (
        ("comm", ""), ("port", "80"), ("reason", "NO_SOCKET"), ("remote", "192.0.2.1")))] == 7
    assert samples[("errnomon_probe_attached", (("probe", "fexit:inet_recvmsg"), ("signal", "recv_errors")))] == 1
    assert samples[("errnomon_probe_missed_total", (("probe", "syscalls:sys_exit_connect"),))] == 4
    assert samples[("errnomon_connect_failures_total", (
        ("comm", "curl"), ("errno", "ECONNREFUSED"), ("port", "5432"), ("remote", "10.0.0.5")))] == 3
    assert sum(v for (name, _), v in samples.items() if name == "errnomon_socket_errors_total") == 7
    assert len(samples) == len(EVENTS) + sum(map(len, ATTACHED.values())) + len(MISSED) + len(DROPS) + 2 + 2 * (len(ERRNOMON_METRICS) + 1) + 1


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run 'make test' (it installs Debian's prometheus package, "
                    "which provides promtool) or apt-get install prometheus")
    return path


def test_promtool_check_metrics(setup):
    """`promtool check metrics` (Prometheus 2.x) exits 0 when clean; 3 when it only found lint problems,
    each printed as "<metric name> <problem>" (e.g. `foo counter metrics should have "_total" suffix`);
    1 with "error while linting: ..." when the text does not parse. Errors fail this test; lint
    problems are tolerated, but only as such lines about our own metrics."""
    registry, _, _ = setup
    text = exposition(registry)
    run = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    output = (run.stdout + run.stderr).strip()
    assert run.returncode in (0, 3), "promtool check metrics failed (%d):\n%s" % (run.returncode, output)
    assert "error" not in output.lower(), output
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    for line in filter(None, output.splitlines()):
        assert line.split()[0] in names, "unexpected promtool output: %r" % line
    assert run.returncode == 0 or output, "exit 3 without any lint problem printed"


def test_promtool_rejects_garbage():
    """The check above would notice a broken exposition: promtool reports it as an error."""
    run = subprocess.run([promtool(), "check", "metrics"], input="garbage{{\n", capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert "error" in (run.stdout + run.stderr).lower()


def idle(comm, port, le, n):
    return ev("tcp_reset_idle", comm=comm, remote=None, port=port, reason=le), n


def test_reset_idle_histogram_is_cumulative_with_its_count_and_sum_in_seconds():
    agg = Aggregator(config.parse(""))
    # the programs count each reset in its own bucket (le), and its milliseconds in le="sum"
    agg.add([idle("api", 5432, "1.0", 2), idle("api", 5432, "350.0", 3), idle("api", 5432, "+Inf", 1),
             idle("api", 5432, "sum", 2 * 400 + 3 * 340_000 + 4_000_000), idle("web", 80, "5.0", 1),
             idle("web", 80, "sum", 2500)])
    registry = CollectorRegistry()
    registry.register(ErrnoCollector(agg, Status()))
    families = {f.name: f for f in text_string_to_metric_families(exposition(registry))}
    h = families["errnomon_tcp_reset_idle_seconds"]
    assert h.type == "histogram"
    got = {(s.name, s.labels.get("comm"), s.labels.get("le")): s.value for s in h.samples}
    le = ["1.0", "5.0", "15.0", "30.0", "60.0", "120.0", "350.0", "600.0", "900.0", "3600.0", "+Inf"]
    assert [got[("errnomon_tcp_reset_idle_seconds_bucket", "api", b)] for b in le] == [2, 2, 2, 2, 2, 2, 5, 5, 5, 5, 6]
    assert got[("errnomon_tcp_reset_idle_seconds_count", "api", None)] == 6
    assert got[("errnomon_tcp_reset_idle_seconds_sum", "api", None)] == 2 * 0.4 + 3 * 340 + 4000
    assert [got[("errnomon_tcp_reset_idle_seconds_bucket", "web", b)] for b in le] == [0] + [1] * 10
    assert {s.labels["port"] for s in h.samples if s.labels["comm"] == "web"} == {"80"}


def test_a_histogram_expires_whole_or_not_at_all():
    now = [0.0]
    agg = Aggregator(config.parse("series: {ttl: 60s}"), clock=lambda: now[0])
    agg.add([idle("api", 5432, "1.0", 1), idle("api", 5432, "sum", 100)])
    now[0] = 50.0
    agg.add([idle("api", 5432, "600.0", 1), idle("api", 5432, "sum", 500_000)])
    now[0] = 100.0  # the "1" bucket is 100 s old, but its histogram moved 50 s ago: kept
    assert agg.expire() == 0
    assert len(agg.rows("tcp_reset_idle")[1]) == 3
    now[0] = 111.0
    assert agg.expire() == 3
