"""monitor/exposition.py: the streamed scrape says exactly what prometheus-client's own whole-body encoders say,
in both formats and gzipped, while never holding more than a slice of samples and a piece of body."""

import gzip
import ipaddress
import zlib

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from monitor import config, exposition
from monitor.aggregate import Aggregator
from monitor.collector import ErrnoCollector
from monitor.decode import Event

STATUS = {"attached": {"resets_sent": [("tcp:tcp_send_reset", True)]}, "drops": {"socket_errors": 1},
          "missed": {"tcp:tcp_receive_reset": 0}}
PEERS = 2500  # over two slices of 1000 and a part


def registry(slice_size):
    agg = Aggregator(config.parse("series: {budget: 10000}"))
    agg.add((Event("connect_failures", "ECONNREFUSED", None, "curl", ipaddress.ip_address("10.0.%d.%d" % divmod(i, 250)),
                   5432, None, None, None, 0, 0), 1 + i % 7) for i in range(PEERS))
    agg.add([(Event("socket_errors", "ECONNRESET", "recv", 'we"ird\\name\n', ipaddress.ip_address("::1"), 443,
                    None, None, None, 0, 0), 3)])
    r = CollectorRegistry()
    r.register(ErrnoCollector(agg, lambda: STATUS, slice_size=slice_size))
    return r


def samples(families):
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples)


@pytest.mark.parametrize("accept, parse, whole", [
    (None, text_string_to_metric_families, generate_latest),
    ("application/openmetrics-text; version=1.0.0", om_parse, om_exposition.generate_latest),
])
def test_streamed_body_equals_the_librarys_whole_body(accept, parse, whole):
    reference = whole(registry(slice_size=10 ** 6)).decode()  # one family per metric, built at once
    content_type, body = exposition.content(registry(slice_size=1000), accept)
    pieces = list(body)
    text = b"".join(pieces).decode()
    assert content_type.startswith("application/openmetrics-text" if accept else "text/plain; version=0.0.4")
    assert len(pieces) > 1 and all(len(p) < 2 * exposition.PIECE for p in pieces)
    assert samples(parse(text)) == samples(parse(reference))
    assert sum(1 for s in parse(text) for _ in s.samples if s.name == "errnomon_connect_failures") == PEERS
    # one header per metric, however many slices it came in (the OpenMetrics parser rejects a repeated one)
    assert text.count("# TYPE errnomon_connect_failures") == 1 and text.count("# HELP errnomon_connect_failures") == 1
    assert text.endswith("# EOF\n") == bool(accept) and text.count("# EOF") == (1 if accept else 0)


def test_gzipped_stream_is_one_gzip_member_of_the_same_body():
    plain = b"".join(exposition.content(registry(slice_size=1000), None)[1])
    _, packed = exposition.content(registry(slice_size=1000), None, gzip_level=1)
    pieces = list(packed)
    data = b"".join(pieces)
    assert data[:2] == b"\x1f\x8b" and data[8] == 4  # gzip magic; XFL 4: level 1
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert d.decompress(data) == plain and d.eof and not d.unused_data
    assert gzip.decompress(data) == plain


def test_an_empty_metric_keeps_its_header_and_nothing_is_repeated():
    agg = Aggregator(config.parse(""))
    r = CollectorRegistry()
    r.register(ErrnoCollector(agg, lambda: {"attached": {}, "drops": {}}, slice_size=1))
    _, body = exposition.content(r, None)
    text = b"".join(body).decode()
    assert "# TYPE errnomon_listen_drops_total counter\n" in text
    assert text == generate_latest(r).decode()
