"""monitor/web.py: --web.listen-address parsing and the HTTP server (on a free local port, no root)."""

import contextlib
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor import web


@pytest.mark.parametrize(
    "text, expected",
    [
        (":9779", ("", 9779)),
        ("127.0.0.1:9779", ("127.0.0.1", 9779)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9779", ("::1", 9779)),
        ("[::]:1", ("::", 1)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen_address(text, expected):
    assert web.parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["9779", "host:", ":0", ":70000", ":65536", "x:y", "", ":", ":-1", ": 9779",
                                  ":²", ":٩٧٧٩"])
def test_parse_listen_address_rejects(text):
    with pytest.raises(web.ListenError) as info:
        web.parse_listen_address(text)
    assert str(info.value) == ("--web.listen-address %r is not host:port: use e.g. :9779 or 127.0.0.1:9779"
                               % text)


def free_port(host="127.0.0.1", family=socket.AF_INET):
    """serve() rejects port 0, so ask the kernel for a free port and release it."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    counter = Counter("errnomon_test", "A test counter.", ["kind"], registry=registry)
    counter.labels(kind="unit").inc(2)
    return registry


@contextlib.contextmanager
def serving(address, path, registry):
    httpd = web.serve(address, path, registry)
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def get(url):
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.mark.parametrize("path", ["/metrics", "/custom/path"])
def test_routes(registry, path):
    port = free_port()
    base = "http://127.0.0.1:%d" % port
    with serving("127.0.0.1:%d" % port, path, registry):
        status, ctype, body = get(base + "/")
        assert (status, ctype) == (200, "text/html; charset=utf-8")
        assert body == web.LANDING.format(path=path)
        assert '<a href="%s">Metrics</a>' % path in body

        status, ctype, body = get(base + path)
        assert status == 200
        assert ctype.startswith("text/plain")
        assert 'errnomon_test_total{kind="unit"} 2.0\n' in body
        assert "# TYPE errnomon_test_total counter\n" in body

        status, ctype, body = get(base + "/nope")
        assert (status, ctype, body) == (404, "text/plain", "not found: metrics are at %s\n" % path)


def test_ipv6_loopback(registry):
    try:
        port = free_port("::1", socket.AF_INET6)
    except OSError as e:
        pytest.fail("no IPv6 loopback (::1) here: errnomon is tested on IPv6 too (%s)" % e)
    with serving("[::1]:%d" % port, "/metrics", registry) as httpd:
        assert httpd.socket.family == socket.AF_INET6
        status, _, body = get("http://[::1]:%d/metrics" % port)
        assert status == 200 and 'errnomon_test_total{kind="unit"} 2.0' in body


def test_port_in_use(registry):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        address = "127.0.0.1:%d" % blocker.getsockname()[1]
        with pytest.raises(web.ListenError) as info:
            httpd = web.serve(address, "/metrics", registry)
            httpd.shutdown()  # only reached if serve() wrongly succeeded
            httpd.server_close()
    assert str(info.value) == ("cannot listen on %s: Address already in use: pick a free address with "
                               "--web.listen-address" % address)


def test_bad_address_raises_listen_error(registry):
    with pytest.raises(web.ListenError, match="is not host:port"):
        web.serve("127.0.0.1:0", "/metrics", registry)
