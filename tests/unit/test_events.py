"""monitor/events.py: decoding ring records, the explanation rules, the kept events, GET /errors filters, and
bpfmap.EventRing's record walk (on a file laid out as the kernel lays out a ring). No root, no bcc."""

import ctypes
import gzip
import json
import mmap
import struct

import pytest

from monitor import abi, bpfmap, config, events

HZ = 250
T0 = 5_000_000_000_000  # ktime of the events below, ns


def record(**fields):
    """The bytes of one struct errnomon_event."""
    e = abi.Event()
    for name, value in fields.items():
        if name in ("local", "remote"):
            getattr(e, name)[:len(value)] = list(value)
        elif name == "comm":
            e.comm = value.encode()
        else:
            setattr(e, name, value)
    return bytes(e)


def tcp_record(**fields):
    base = dict(ktime_ns=T0, kind=abi.DEFINES["EVENT_RESET_RECEIVED"], tgid=42, comm="curl", family=2,
                local=[127, 0, 0, 1], remote=[10, 0, 0, 5], local_port=50000, remote_port=8080, port=8080,
                state=1, flags=abi.DEFINES["EVENT_TCP_FACTS"], jiffies=10_000, lsndtime=10_000 - 25,
                lrcvtime=10_000 - 61 * HZ, bytes_sent=300, bytes_received=4000, total_retrans=2, srtt_us=1500,
                established_ns=T0 - 70 * 10**9)
    base.update(fields)
    return record(**base)


decode = events.Decoder(HZ, {3: "NO_SOCKET"})


def test_decode_tcp_facts():
    e = decode(tcp_record(), 1000.0)
    assert e == dict(
        time=1000.0 + T0 / 1e9, ktime_s=T0 / 1e9, kind="reset_received", pid=42, tid=0, comm="curl", cgroup=0, op="", errno="ECONNRESET",
        reason="", family="ipv4", local="127.0.0.1", local_port=50000, remote="10.0.0.5", remote_port=8080,
        port=8080, state="ESTABLISHED", age_s=70.0, idle_send_s=0.1, idle_recv_s=61.0, bytes_sent=300,
        bytes_received=4000, retrans=2, srtt_ms=1.5, fin_received=False, fin_before_s=None, rst_ttl=None,
        peer_ttl=None)


def test_decode_ttls():
    e = decode(tcp_record(rst_ttl=64, peer_ttl=63), 0)
    assert (e["rst_ttl"], e["peer_ttl"]) == (64, 63)
    e = decode(tcp_record(peer_ttl=255), 0)  # a reset not seen (no kprobe, or 5.10's tcp_reset): None, not 0
    assert (e["rst_ttl"], e["peer_ttl"]) == (None, 255)


def test_jiffies_wrap_and_unknown_hz():
    raw = tcp_record(jiffies=10, lsndtime=(1 << 32) - 240)
    assert decode(raw, 0)["idle_send_s"] == 1.0
    assert events.Decoder(None)(raw, 0)["idle_send_s"] is None


def test_fin_is_not_a_byte_and_gives_its_time():
    e = decode(tcp_record(state=8, fin_ns=T0 - 1_500_000_000, bytes_received=44), 0)
    assert (e["errno"], e["fin_received"], e["fin_before_s"], e["bytes_received"]) == ("EPIPE", True, 1.5, 43)
    # a state only a FIN leads to says so without the owner's timestamp
    e = decode(tcp_record(state=9, bytes_received=44), 0)
    assert (e["fin_received"], e["fin_before_s"], e["bytes_received"]) == (True, None, 43)


def test_no_tcp_facts_are_null():
    e = decode(record(ktime_ns=T0, kind=abi.DEFINES["EVENT_RESET_SENT"], code=3, family=10,
                      remote=[0] * 15 + [1], port=80), 0)
    assert (e["reason"], e["remote"], e["local"], e["family"], e["state"]) == ("NO_SOCKET", "::1", "", "ipv6", "")
    assert [e[k] for k in ("age_s", "idle_send_s", "idle_recv_s", "bytes_sent", "bytes_received", "retrans",
                           "srtt_ms", "fin_before_s")] == [None] * 8


def test_connect_failures_have_no_idle_times():
    e = decode(tcp_record(kind=abi.DEFINES["EVENT_CONNECT_FAILED"], state=2, code=111, op=3, established_ns=0), 0)
    assert (e["errno"], e["op"], e["state"], e["age_s"], e["idle_send_s"], e["idle_recv_s"], e["retrans"]) == \
        ("ECONNREFUSED", "connect", "SYN_SENT", None, None, None, 2)


def event(**kw):
    e = dict(kind="socket_error", errno="", reason="", state="ESTABLISHED", remote="10.0.0.5", remote_port=8080,
             fin_received=False, fin_before_s=None, idle_recv_s=None, idle_send_s=None, retrans=None, peer=None)
    e.update(kw)
    return e


@pytest.mark.parametrize("facts, rule, says", [
    (dict(kind="connect_failed", errno="ECONNREFUSED", remote="127.0.0.1", remote_port=9), "connect_refused",
     "connection refused: nothing listens on 127.0.0.1:9"),
    (dict(kind="reset_received", errno="ECONNREFUSED", state="SYN_SENT", remote="::1", remote_port=9),
     "connect_refused", "connection refused: nothing listens on [::1]:9"),
    (dict(kind="connect_failed", errno="ETIMEDOUT", retrans=6), "connect_timeout",
     "connect timed out after 6 retransmissions"),
    (dict(kind="connect_failed", errno="EHOSTUNREACH"), "connect_unreachable", "connect failed, EHOSTUNREACH"),
    (dict(kind="reset_received", errno="EPIPE", state="CLOSE_WAIT", fin_received=True, fin_before_s=3.14),
     "stale_keepalive", "peer had closed 3.1 s earlier: a stale keep-alive connection"),
    (dict(kind="reset_received", errno="ECONNRESET", idle_recv_s=61.2, idle_send_s=0.0), "idle_timeout",
     "reset after 61 s idle: an idle timeout near 61 s between the hosts"),
    (dict(kind="socket_error", errno="ECONNRESET", idle_recv_s=61.2, idle_send_s=0.3), "idle_timeout",
     "reset after 61 s idle"),
    # a long silence in which this side kept sending is not an idle connection
    (dict(kind="reset_received", errno="ECONNRESET", idle_recv_s=61.2, idle_send_s=30.0), "unread_data",
     "peer closed with unread data"),
    (dict(kind="reset_received", errno="ECONNRESET", state="FIN_WAIT2"), "unread_data",
     "peer closed with unread data"),
    (dict(errno="ECONNRESET"), "reset_by_peer", "connection reset by 10.0.0.5:8080"),
    (dict(errno="EPIPE"), "write_after_close", "write after the connection was closed"),
    (dict(errno="ETIMEDOUT", retrans=15), "timed_out", "connection timed out after 15 retransmissions"),
    (dict(kind="reset_sent", reason="NO_SOCKET", remote_port=0), "reset_no_socket",
     "reset sent: a segment from 10.0.0.5 for no socket"),
    (dict(kind="reset_sent", reason="TCP_ABORT_ON_CLOSE"), "reset_close_unread", "reset sent: this host closed"),
    (dict(kind="reset_sent", reason="TCP_STATE"), "reset_sent", "reset sent to 10.0.0.5:8080 (TCP_STATE)"),
    (dict(kind="reset_sent"), "reset_sent", "reset sent to 10.0.0.5:8080"),
    (dict(errno="EHOSTDOWN", state="CLOSE"), "other", "socket_error EHOSTDOWN in CLOSE"),
    # the other end on this host: who sent the reset, and the kernel's reason
    (dict(kind="reset_received", errno="ECONNRESET", idle_recv_s=61.2, idle_send_s=0.0, peer=dict(
        pid=1234, comm="nginx", labels={}, reason="TCP_ABORT_ON_CLOSE")), "reset_by_host_peer",
     "reset by nginx[1234] on this host (TCP_ABORT_ON_CLOSE: it closed the connection with data unread)"),
    (dict(errno="EPIPE", peer=dict(pid=7, comm="srv", labels={}, reason="NOT_SPECIFIED")), "reset_by_host_peer",
     "reset by srv[7] on this host (NOT_SPECIFIED)"),
    (dict(errno="ECONNRESET", peer=dict(pid=7, comm="srv", labels={}, reason="")), "reset_by_host_peer",
     "reset by srv[7] on this host"),
    (dict(kind="reset_received", errno="ECONNRESET", peer=dict(pid=0, comm="", labels={},
                                                               reason="TCP_TIMEWAIT_SOCKET")),
     "reset_by_host_peer", "reset by this host's kernel: a segment for a connection in TIME_WAIT"),
    (dict(kind="reset_received", errno="ECONNRESET", peer=dict(pid=0, comm="", labels={}, reason="NO_SOCKET")),
     "reset_by_host_peer", "reset by this host's kernel: no socket for it"),
    (dict(errno="ECONNRESET", peer=dict(pid=0, comm="", labels={}, reason="TCP_STATE")), "reset_by_host_peer",
     "reset by this host's kernel (TCP_STATE: it aborted the connection"),
    # a stale keep-alive says more than who; a timeout is not a reset
    (dict(kind="reset_received", errno="EPIPE", state="CLOSE_WAIT", fin_received=True, fin_before_s=2.0,
          peer=dict(pid=7, comm="srv", labels={}, reason="NO_SOCKET")), "stale_keepalive", "peer had closed 2.0"),
    (dict(errno="ETIMEDOUT", retrans=3, peer=dict(pid=7, comm="srv", labels={}, reason="")), "timed_out",
     "connection timed out"),
    # a reset with another TTL than the peer's segments: a middlebox's, whatever else holds
    (dict(kind="reset_received", errno="ECONNRESET", rst_ttl=64, peer_ttl=63, idle_recv_s=3.6, idle_send_s=0.0),
     "reset_by_middlebox", "RST TTL 64, peer's 63: sent by a middlebox, not by 10.0.0.5:8080 (a firewall, NAT or "
     "load balancer between the hosts that forgot the connection after 3.6 s idle)"),
    (dict(errno="ECONNRESET", rst_ttl=64, peer_ttl=58, fin_received=True, fin_before_s=1.0), "reset_by_middlebox",
     "RST TTL 64, peer's 58: sent by a middlebox, not by 10.0.0.5:8080 (a firewall, NAT or load balancer between "
     "the hosts)"),
    # the same TTL, or one of them unknown: the other rules decide
    (dict(kind="reset_received", errno="ECONNRESET", state="FIN_WAIT2", rst_ttl=63, peer_ttl=63), "unread_data",
     "peer closed with unread data"),
    (dict(kind="reset_received", errno="ECONNRESET", state="FIN_WAIT2", rst_ttl=64), "unread_data",
     "peer closed with unread data"),
    (dict(kind="reset_received", errno="ECONNREFUSED", state="SYN_SENT", rst_ttl=64, remote_port=9),
     "connect_refused", "connection refused"),
])
def test_rules(facts, rule, says):
    e = event(**facts)
    first = next(r for r in events.RULES if r.when(e))
    assert first.name == rule
    assert events.explain(e).startswith(says)
    assert set(first.facts) <= set(e)


def test_every_rule_is_documented():
    with open("docs/errors.md") as f:
        text = f.read()
    for rule in events.RULES:
        assert "| `%s` |" % rule.name in text, rule.name


def kept_log(n, keep=100):
    log = events.EventLog(keep, labels=lambda cgroup, pid: {"unit": "u%d" % cgroup} if cgroup else {},
                          dropped=lambda: {"rate_limit": 7, "ring_full": 0})
    log.add([dict(decode(tcp_record(tgid=i, cgroup=i % 2, remote_port=8000 + i, code=104,
                                    kind=abi.DEFINES["EVENT_SOCKET_ERROR"], op=2), 100.0),
                  comm="c%d" % (i % 3), time=100.0 + i) for i in range(n)])
    return log


def test_log_numbers_labels_and_bounds():
    log = kept_log(5, keep=3)
    answer = log.query(events.parse_filters("", log.keep))
    assert [e["seq"] for e in answer["events"]] == [3, 4, 5]
    assert (answer["kept"], answer["dropped"], answer["last_seq"]) == (3, {"rate_limit": 7, "ring_full": 0}, 5)
    assert log.query(events.parse_filters("comm=none", log.keep))["last_seq"] == 5  # whatever the filters
    assert [e["labels"] for e in answer["events"]] == [{}, {"unit": "u1"}, {}]
    assert list(answer["events"][0]) == list(events.FIELDS)
    assert answer["events"][0]["explanation"].startswith("reset after 61 s idle")  # silent 61 s, then sent
    log.configure(2)
    assert [e["seq"] for e in log.query(events.parse_filters("", 2))["events"]] == [4, 5]


@pytest.mark.parametrize("query, seqs", [
    ("comm=c1", [2, 5, 8]),
    ("comm=c1&limit=2", [5, 8]),          # the newest
    ("after=3&limit=2", [4, 5]),          # following: the oldest after it
    ("after=3&comm=c0", [4, 7, 10]),
    ("errno=ECONNRESET&limit=1", [10]),
    ("errno=104&limit=1", [10]),
    ("errno=econnreset&limit=1", [10]),
    ("errno=EPIPE", []),
    ("remote=10.0.0.0/8&limit=1", [10]),
    ("remote=10.0.0.5&limit=1", [10]),
    ("remote=10.0.1.0/24", []),
    ("remote=::/0", []),
    ("since=105", [6, 7, 8, 9, 10]),
    ("port=8080&limit=1", [10]),
    ("port=443", []),
])
def test_filters(query, seqs):
    log = kept_log(10)
    assert [e["seq"] for e in log.query(events.parse_filters(query, log.keep, now=110.0))["events"]] == seqs


def test_since_as_a_duration():
    assert events.parse_filters("since=30s", 100, now=1000.0).since == 970.0
    assert events.parse_filters("since=5m", 100, now=1000.0).since == 700.0
    assert events.parse_filters("since=1h", 100, now=5000.0).since == 1400.0
    assert events.parse_filters("since=1765000000.5", 100).since == 1765000000.5


def test_default_limit():
    assert events.parse_filters("", 10000).limit == 1000
    assert events.parse_filters("", 10).limit == 10


@pytest.mark.parametrize("query, names", [
    ("port=http", "port:"), ("port=0", "port:"), ("port=70000", "port:"),
    ("remote=10.0.0.300", "remote:"), ("remote=", "remote:"),
    ("errno=EBOGUS", "errno:"), ("errno=", "errno:"),
    ("since=yesterday", "since:"), ("since=-5m", "since:"),
    ("after=-1", "after:"), ("after=x", "after:"),
    ("limit=0", "limit:"), ("limit=101", "limit:"), ("limit=ten", "limit:"),
    ("comm=", "comm:"), ("comm=a-name-far-too-long", "comm:"),
    ("colour=red", "unknown parameter 'colour'"), ("port=1&port=2", "port given 2 times"),
])
def test_bad_filters(query, names):
    with pytest.raises(events.FilterError) as e:
        events.parse_filters(query, 100)
    assert str(e.value).startswith(names) and "\n" not in str(e.value)


def call(app, query, method="GET", accept=None):
    answer = {}
    environ = {"REQUEST_METHOD": method, "QUERY_STRING": query}
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    body = b"".join(app(environ, lambda status, headers: answer.update(status=status, headers=dict(headers))))
    return answer["status"], answer["headers"], body


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_app_answers_a_browser_with_the_page_and_format_decides_outright():
    app = events.app(kept_log(4))
    status, headers, body = call(app, "comm=c0&refresh=5", accept=BROWSER_ACCEPT)
    assert (status, headers["Content-Type"], headers["Vary"]) == ("200 OK", "text/html; charset=utf-8", "Accept")
    page = body.decode()
    assert page.count("<tr data-seq=") == 2 and '<meta http-equiv="refresh" content="5">' in page
    assert 'name="comm" size="14" placeholder="e.g. nginx" value="c0"' in page
    assert call(app, "format=json", accept=BROWSER_ACCEPT)[1]["Content-Type"] == "application/json"
    assert call(app, "format=html", accept="*/*")[1]["Content-Type"].startswith("text/html")
    for query, message in (("format=xml", "format: 'xml' is not html or json"),
                           ("refresh=0", "refresh: '0' is not a number of seconds from 1 to 3600")):
        status, _, body = call(app, query, accept=BROWSER_ACCEPT)
        assert status.startswith("400") and body.decode().startswith(message), body


def test_app():
    app = events.app(kept_log(4))
    status, headers, body = call(app, "comm=c0")
    assert (status, headers["Content-Type"]) == ("200 OK", "application/json")
    assert [e["seq"] for e in json.loads(body)["events"]] == [1, 4]
    status, _, body = call(app, "limit=nope")
    assert status.startswith("400") and body.decode().startswith("limit: 'nope' is not a number of events")
    assert call(app, "", "POST")[0].startswith("405")


def test_config():
    c = config.parse("events: {enabled: false, rate: 50, keep: 20}")
    assert (c.events_enabled, c.events_rate, c.events_keep) == (False, 50, 20)
    d = config.parse("")
    assert (d.events_enabled, d.events_rate, d.events_keep) == (True, 1000, 10000)
    for text, message in (("events: {rate: 0}", "events.rate: must be between 1 and 1000000, got 0"),
                          ("events: {keep: many}", "events.keep: expected a whole number"),
                          ("events: {enabled: 1}", "events.enabled: expected true or false"),
                          ("events: {rates: 1}", "events.rates: unknown key")):
        with pytest.raises(config.ConfigError) as e:
            config.parse(text)
        assert message in str(e.value)


def test_interval_the_programs_take():
    from monitor.daemon import event_interval_ns
    assert event_interval_ns(config.parse("events: {rate: 50}")) == 20_000_000
    assert event_interval_ns(config.parse("")) == 1_000_000
    assert event_interval_ns(config.parse("events: {enabled: false}")) == 0


def test_measured_hz(monkeypatch):
    ticks = iter([1000, 1050])
    monkeypatch.setattr(events, "_timer_list_jiffies", lambda path="": next(ticks))
    monkeypatch.setattr(events.time, "sleep", lambda s: None)
    clock = iter([10.0, 10.2])
    monkeypatch.setattr(events.time, "monotonic", lambda: next(clock))
    assert events.measured_hz() == 250


def test_config_hz(tmp_path):
    boot = tmp_path / "config-6.1.0"
    boot.write_text("# CONFIG_HZ_100 is not set\nCONFIG_HZ_1000=y\nCONFIG_HZ=1000\n")
    with gzip.open(tmp_path / "config.gz", "wt") as f:
        f.write("CONFIG_HZ=300\n")
    assert events.config_hz("6.1.0", boot=str(tmp_path / "config-"), proc=str(tmp_path / "config.gz")) == 1000
    assert events.config_hz("6.2.0", boot=str(tmp_path / "config-"), proc=str(tmp_path / "config.gz")) == 300
    assert events.config_hz("6.2.0", boot=str(tmp_path / "config-"), proc=str(tmp_path / "none.gz")) is None


# ---- the ring's record walk, on a file laid out as the kernel lays out a ring ----

def ring_file(tmp_path, size, consumer, records, producer=None):
    """[consumer page][producer page][data x2]: records (bytes, flags) written from `consumer` on."""
    page = mmap.PAGESIZE
    data = bytearray(2 * size)
    pos = consumer
    for body, flags in records:
        at = pos & (size - 1)
        chunk = struct.pack("II", len(body) | flags, 0) + body
        for i, b in enumerate(chunk):
            data[(at + i) % size] = b
        pos += (len(body) + 8 + 7) & ~7
    data[size:] = data[:size]  # the kernel maps the data pages twice in a row
    path = tmp_path / "ring"
    path.write_bytes(struct.pack("Q", consumer).ljust(page, b"\0") +
                     struct.pack("Q", pos if producer is None else producer).ljust(page, b"\0") + bytes(data))
    return path, pos


def open_ring(path, size):
    f = open(path, "r+b")
    ring = bpfmap.EventRing(f.fileno(), size)
    return f, ring


def test_ring_records_wrap_busy_and_discarded(tmp_path):
    size = 4096
    one, two, three = b"a" * 144, b"b" * 144, b"c" * 144
    path, end = ring_file(tmp_path, size, size - 160, [(one, 0), (two, bpfmap.EventRing.DISCARD), (three, 0)])
    f, ring = open_ring(path, size)
    assert ring.read() == [one, three]  # the first wraps around the end; the discarded one is skipped
    assert struct.unpack_from("Q", ring._consumer, 0)[0] == end
    assert ring.read() == []
    ring.close()
    f.close()
    path, _ = ring_file(tmp_path, size, 0, [(one, 0), (two, bpfmap.EventRing.BUSY)])
    f, ring = open_ring(path, size)
    assert ring.read() == [one]  # a record still being written stops the walk until it is submitted
    assert struct.unpack_from("Q", ring._consumer, 0)[0] == 152
    ring.close()
    f.close()


def test_reader_labels(tmp_path):
    size = 4096
    raw = tcp_record(cgroup=7)
    path, _ = ring_file(tmp_path, size, 0, [(raw, 0), (raw, 0)])
    f, ring = open_ring(path, size)
    log = events.EventLog(10, labels=lambda cgroup, pid: {"unit": str(cgroup)})
    seen = []
    reader = events.Reader(ring, events.Decoder(HZ), log, prepare=seen.append)
    assert reader() == 2
    assert seen == [{7}]
    assert reader() == 0
    assert [e["labels"] for e in log.query(events.parse_filters("", 10))["events"]] == [{"unit": "7"}] * 2
    ring.close()
    f.close()


def test_event_mirror_size():
    assert ctypes.sizeof(abi.Event) % 8 == 0 and abi.EVENTS_RING_BYTES == 128 * 4096


def test_labels_are_the_metrics_extra_labels():
    from monitor.aggregate import Aggregator
    agg = Aggregator(config.parse("labels: {pid: true, unit: true, pod: true}"),
                     unit_of=lambda cgroup, pid: "u%d.service" % cgroup, pod_of=lambda cgroup: ("ns", "p", "c"))
    log = events.EventLog(10, labels=agg.extra_labels)
    log.add([decode(tcp_record(cgroup=3), 0)])
    (e,) = log.query(events.parse_filters("", 10))["events"]
    assert e["labels"] == {"pid": "42", "unit": "u3.service", "namespace": "ns", "pod": "p", "container": "c"}
    assert events.EventLog(10, labels=Aggregator(config.parse("")).extra_labels).labels(3, 42) == {}


# ---- the other end on this host: a reset_sent joined to the reset_received and socket_error it caused ----

SRV, CLI = ("127.0.0.1", 8080), ("127.0.0.1", 50000)


def reset_event(kind, at, sender=SRV, receiver=CLI, **kw):
    """An event as Decoder gives it (ktime_s in seconds): the sender's reset_sent or the receiver's events."""
    local, remote = (sender, receiver) if kind == "reset_sent" else (receiver, sender)
    e = dict(time=1000.0 + at, ktime_s=at, kind=kind, pid=4321 if kind == "reset_sent" else 42, tid=0,
             comm="srv" if kind == "reset_sent" else "cli", cgroup=5 if kind == "reset_sent" else 0, op="",
             errno="", reason="", family="ipv4", local=local[0], local_port=local[1], remote=remote[0],
             remote_port=remote[1], port=8080, state="ESTABLISHED", age_s=None, idle_send_s=None,
             idle_recv_s=None, bytes_sent=None, bytes_received=None, retrans=None, srtt_ms=None,
             fin_received=False, fin_before_s=None, rst_ttl=None, peer_ttl=None)
    if kind == "reset_sent":
        e.update(reason="TCP_ABORT_ON_CLOSE", state="CLOSE")
    elif kind == "reset_received":
        e["errno"] = "ECONNRESET"
    e.update(kw)
    return e


def peer_log():
    return events.EventLog(100, labels=lambda cgroup, pid: {"unit": "srv.service"} if cgroup == 5 else {})


def peers_of(log, *batches):
    for batch in batches:
        log.add(batch)
    return [(e["kind"], e["peer"]) for e in log.query(events.parse_filters("", log.keep))["events"]]


SRV_PEER = {"pid": 4321, "comm": "srv", "labels": {"unit": "srv.service"}, "reason": "TCP_ABORT_ON_CLOSE"}


def test_peer_joins_the_reset_and_the_later_error_of_the_connection():
    log = peer_log()
    got = peers_of(log, [reset_event("reset_sent", 10.0), reset_event("reset_received", 10.00002, age_s=0.5)],
                   # the application reads its error later, in another batch
                   [reset_event("socket_error", 13.0, errno="ECONNRESET", op="recv", state="CLOSE", age_s=3.5)],
                   [reset_event("socket_error", 14.0, errno="EPIPE", op="send", state="CLOSE")])
    assert got == [("reset_sent", None), ("reset_received", SRV_PEER), ("socket_error", SRV_PEER),
                   ("socket_error", SRV_PEER)]
    (received, error) = log.query(events.parse_filters("comm=cli&limit=2", log.keep))["events"][:2]
    assert received["explanation"] == error["explanation"] == \
        "reset by srv[4321] on this host (TCP_ABORT_ON_CLOSE: it closed the connection with data unread)"


def test_peer_needs_the_reversed_4tuple():
    other_client = ("127.0.0.1", 50001)
    got = peers_of(peer_log(), [
        reset_event("reset_sent", 10.0),
        reset_event("reset_received", 10.0001, receiver=other_client),             # another connection
        reset_event("reset_received", 10.0001, sender=("127.0.0.2", 8080)),        # another address
        reset_event("reset_received", 10.0001, family="ipv6"),
        reset_event("socket_error", 10.5, errno="ETIMEDOUT"),                      # not what a reset gives
        reset_event("socket_error", 10.5, errno="ECONNRESET", local="", local_port=0),  # no 4-tuple to join by
    ])
    assert got == [("reset_sent", None)] + [("reset_received", None)] * 3 + [("socket_error", None)] * 2


def test_peer_in_order_only():
    # the receiver's events before the reset was sent are not its
    got = peers_of(peer_log(), [reset_event("socket_error", 9.0, errno="EPIPE"),
                                reset_event("reset_received", 9.5), reset_event("reset_sent", 10.0)])
    assert got == [("socket_error", None), ("reset_received", None), ("reset_sent", None)]


def test_peer_ages_out():
    got = peers_of(peer_log(), [reset_event("reset_sent", 10.0), reset_event("reset_received", 10.0001)],
                   [reset_event("socket_error", 19.9, errno="ECONNRESET")],
                   [reset_event("socket_error", 20.1, errno="EPIPE")],   # more than 10 s after the reset
                   [reset_event("socket_error", 20.2, errno="EPIPE")])
    assert got == [("reset_sent", None), ("reset_received", SRV_PEER), ("socket_error", SRV_PEER),
                   ("socket_error", None), ("socket_error", None)]
    # a reset received a second after the reset sent is not its delivery on this host
    assert peers_of(peer_log(), [reset_event("reset_sent", 10.0), reset_event("reset_received", 11.5)]) == \
        [("reset_sent", None), ("reset_received", None)]


def test_peer_table_is_bounded():
    log = events.EventLog(10000)
    log.peers = events.Peers(keep=3)
    clients = [("127.0.0.1", 40000 + i) for i in range(5)]
    log.add([reset_event("reset_sent", 10.0 + i * 0.001, receiver=c) for i, c in enumerate(clients)])
    assert len(log.peers.sent) == 3
    log.add([reset_event("reset_received", 10.01, receiver=c) for c in clients])
    got = [e["peer"] is not None for e in log.query(events.parse_filters("comm=cli", log.keep))["events"]]
    assert got == [False, False, True, True, True]  # the two oldest were forgotten
    # and what ages out is forgotten at the next reset sent, joined or not
    log.add([reset_event("reset_sent", 30.0, receiver=("127.0.0.1", 45000))])
    assert list(log.peers.sent) == [("ipv4", "127.0.0.1", 8080, "127.0.0.1", 45000)]
    assert events.PEERS_KEEP == 4096 and events.PEERS_AGE_S == 10.0


def test_peer_missing_half_is_null_never_wrong():
    # the rate limit dropped the reset_sent of a new connection with the 4-tuple of an earlier one reset 2 s
    # before: its events carry their connection's age, and the earlier reset is older than the connection
    got = peers_of(peer_log(), [reset_event("reset_sent", 10.0), reset_event("reset_received", 10.0001)],
                   [reset_event("reset_received", 12.0, age_s=1.0),
                    reset_event("socket_error", 12.5, errno="ECONNRESET", age_s=1.5)])
    assert got == [("reset_sent", None), ("reset_received", SRV_PEER), ("reset_received", None),
                   ("socket_error", None)]
    # a second reset received within the delivery time takes no reset already taken
    got = peers_of(peer_log(), [reset_event("reset_sent", 10.0), reset_event("reset_received", 10.0001),
                                reset_event("reset_received", 10.2)])
    assert got == [("reset_sent", None), ("reset_received", SRV_PEER), ("reset_received", None)]
    # the rate limit dropped the reset_received: the application's error still finds the reset sent
    got = peers_of(peer_log(), [reset_event("reset_sent", 10.0)],
                   [reset_event("socket_error", 11.0, errno="ECONNRESET", age_s=5.0)])
    assert got == [("reset_sent", None), ("socket_error", SRV_PEER)]
    # a newer reset of the same 4-tuple replaces the older
    newer = dict(SRV_PEER, pid=99, comm="srv2", labels={})
    got = peers_of(peer_log(), [reset_event("reset_sent", 10.0),
                                reset_event("reset_sent", 10.5, pid=99, comm="srv2", cgroup=0),
                                reset_event("reset_received", 10.5001)])
    assert got == [("reset_sent", None), ("reset_sent", None), ("reset_received", newer)]


def test_peer_of_kernel_resets_says_so():
    # a time-wait socket's reset: no process
    got = peers_of(peer_log(), [reset_event("reset_sent", 10.0, pid=0, comm="", cgroup=0,
                                            reason="TCP_TIMEWAIT_SOCKET", state="TIME_WAIT"),
                                reset_event("reset_received", 10.0001)])
    assert got[1] == ("reset_received", {"pid": 0, "comm": "", "labels": {}, "reason": "TCP_TIMEWAIT_SOCKET"})


def test_peer_traced_after_its_delivery():
    # an aborting close's reset is traced after loopback delivered it: the receiver's events come first
    got = peers_of(peer_log(), [reset_event("reset_received", 10.0), reset_event("reset_sent", 10.00003)],
                   [reset_event("socket_error", 12.0, errno="ECONNRESET")])
    assert got == [("reset_received", SRV_PEER), ("reset_sent", None), ("socket_error", SRV_PEER)]
    # across two reads of the ring: the event already kept gets its peer
    log = peer_log()
    got = peers_of(log, [reset_event("reset_received", 10.0, age_s=2.0),
                         reset_event("socket_error", 10.00001, errno="ECONNRESET", op="recv")],
                   [reset_event("reset_sent", 10.00003)])
    assert got == [("reset_received", SRV_PEER), ("socket_error", SRV_PEER), ("reset_sent", None)]
    assert log.query(events.parse_filters("limit=1&comm=cli", log.keep))["events"][0]["explanation"].startswith(
        "reset by srv[4321] on this host")
    # ... but not after the delivery time, nor for another connection, nor twice
    got = peers_of(peer_log(), [reset_event("reset_received", 10.0), reset_event("reset_sent", 10.2)])
    assert got == [("reset_received", None), ("reset_sent", None)]
    got = peers_of(peer_log(), [reset_event("reset_received", 10.0, receiver=("127.0.0.1", 50001)),
                                reset_event("reset_sent", 10.00003)])
    assert got == [("reset_received", None), ("reset_sent", None)]
    got = peers_of(peer_log(), [reset_event("reset_received", 10.0), reset_event("reset_sent", 10.00003),
                                reset_event("reset_received", 10.00005)])
    assert got == [("reset_received", SRV_PEER), ("reset_sent", None), ("reset_received", None)]


def test_waiting_events_are_bounded():
    log = events.EventLog(100)
    log.peers = events.Peers(keep=2)
    clients = [("127.0.0.1", 40000 + i) for i in range(3)]
    log.add([reset_event("reset_received", 10.0, receiver=c) for c in clients])
    assert len(log.peers.waiting) == 2
    log.add([reset_event("reset_sent", 10.00003, receiver=c) for c in clients])
    got = [e["peer"] is not None for e in log.query(events.parse_filters("comm=cli", log.keep))["events"]]
    assert got == [False, True, True]
    # and the kept events that went out of the log are not patched
    log = events.EventLog(1)
    log.add([reset_event("reset_received", 10.0)])
    log.add([reset_event("socket_error", 10.00001, errno="ECONNRESET"), reset_event("reset_sent", 10.00003)])
    assert [(e["kind"], e["peer"]) for e in log.query(events.parse_filters("", 1))["events"]] == \
        [("reset_sent", None)]
