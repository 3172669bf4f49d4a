"""TLS, client certificates and basic auth on the real server (monitor/web.py TLSServer, webconfig.Guard),
checked with the real curl binary and raw sockets: no root needed. Ports 19700-19799."""

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor import web, webconfig

from .test_web import concurrently
from .tls_certs import PASSWORD, Certs, free_port, hashed

BODY_LINE = 'errnomon_test_total{kind="tls"} 3.0'


@pytest.fixture(scope="module")
def certs():
    assert shutil.which("curl"), "curl is needed: apt-get install curl ('make test' installs it)"
    c = Certs()
    yield c
    c.remove()


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    Counter("errnomon_test", "A test counter.", ["kind"], registry=registry).labels(kind="tls").inc(3)
    return registry


MTLS = """tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
basic_auth_users:
  prom: {hash}
"""


@contextlib.contextmanager
def serving(certs, registry, text, file_limit=None):
    path = certs.path("tlsh-web.yml")
    with open(path, "w") as f:
        f.write(text.format(hash=hashed()))
    port = free_port()
    httpd = web.bind("127.0.0.1:%d" % port, "/metrics", registry, file_limit,
                     webconfig.Watcher(webconfig.load(path)))
    web.start(httpd)
    try:
        yield "127.0.0.1:%d" % port, httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
    if httpd.scheme == "https":
        assert not httpd.tls_thread.is_alive() and not httpd.links


def curl(certs, url, *args, cert="client", user="prom:" + PASSWORD, timeout=10):
    """(curl's exit status, HTTP status or None, headers {lower name: value}, body, stderr)."""
    command = ["curl", "-sS", "-i", "--max-time", str(timeout), "--cacert", certs.path("ca.crt")]
    if cert:
        command += ["--cert", certs.path(cert + ".crt"), "--key", certs.path(cert + ".key")]
    if user:
        command += ["-u", user]
    r = subprocess.run(command + list(args) + [url], capture_output=True, timeout=timeout + 5)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return r.returncode, status, headers, body.decode(), r.stderr.decode()


def test_https_with_client_certificate_and_basic_auth(certs, registry):
    with serving(certs, registry, MTLS) as (address, httpd):
        assert httpd.scheme == "https"
        rc, status, headers, body, _ = curl(certs, "https://%s/metrics" % address)
        assert (rc, status) == (0, 200) and BODY_LINE in body
        assert headers["content-type"].startswith("text/plain")
        rc, status, _, body, _ = curl(certs, "https://%s/" % address)
        assert (rc, status) == (0, 200) and body == web.LANDING.format(path="/metrics")
        # the name curl checks is localhost (a DNS SAN) as well as the IP
        port = address.split(":")[1]
        rc, status, _, _, _ = curl(certs, "https://localhost:%s/metrics" % port, "--resolve",
                                   "localhost:%s:127.0.0.1" % port)
        assert (rc, status) == (0, 200)


def test_basic_auth_401_without_or_with_a_wrong_password(certs, registry):
    with serving(certs, registry, MTLS) as (address, _):
        url = "https://%s/metrics" % address
        for user in (None, "prom:wrong", "nobody:" + PASSWORD, "prom:"):
            rc, status, headers, body, _ = curl(certs, url, user=user)
            assert (rc, status, body) == (0, 401, "Unauthorized\n"), user
            assert headers["www-authenticate"] == "Basic"
        assert curl(certs, url)[:2] == (0, 200)


def test_head_answers_like_get_without_a_body(certs, registry):
    with serving(certs, registry, MTLS) as (address, _):
        url = "https://%s/metrics" % address
        _, _, get_headers, get_body, _ = curl(certs, url)
        rc, status, headers, body, _ = curl(certs, url, "-I")
        assert (rc, status, body) == (0, 200, "")
        # the GET is streamed (chunked, no Content-Length); HEAD says the length it streamed
        assert "content-length" not in get_headers and headers["content-length"] == str(len(get_body.encode()))
        # unauthorized, twice on one kept-alive connection: each 401 without a body, so the second is read
        # as a response of its own (curl -I with two URLs reuses the connection)
        r = subprocess.run(["curl", "-sS", "-I", "--max-time", "10", "--cacert", certs.path("ca.crt"),
                            "--cert", certs.path("client.crt"), "--key", certs.path("client.key"), url, url],
                           capture_output=True, timeout=15)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count(b"HTTP/1.1 401 Unauthorized\r\n") == 2 and b"Unauthorized\n" not in r.stdout


def test_plain_http_on_the_tls_port_is_answered_400_and_closed(certs, registry):
    with serving(certs, registry, MTLS) as (address, _):
        r = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", "http://%s/metrics" % address],
                           capture_output=True, timeout=15)
        assert r.returncode == 0
        assert r.stdout.startswith(b"HTTP/1.0 400 Bad Request\r\n")
        assert r.stdout.endswith(b"\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
        host, port = address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:  # not TLS, not HTTP: just closed
            s.sendall(b"\x00\x01\x02")
            with pytest.raises(ConnectionResetError):  # unread bytes: the close is a reset
                s.recv(100)
        assert curl(certs, "https://%s/metrics" % address)[:2] == (0, 200)  # still serving


def test_client_certificate_required_and_verified(certs, registry):
    with serving(certs, registry, MTLS) as (address, _):
        url = "https://%s/metrics" % address
        for cert in (None, "stranger"):  # no certificate; one from another CA
            rc, status, _, _, stderr = curl(certs, url, cert=cert)
            assert rc != 0 and status is None, (cert, rc, stderr)
        # and the client refuses a server its CA did not sign
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", certs.path("other-ca.crt"), url],
                           capture_output=True, timeout=15)
        assert r.returncode == 60, r.stderr  # CURLE_PEER_FAILED_VERIFICATION
        assert curl(certs, url)[:2] == (0, 200)


def test_verify_client_cert_if_given(certs, registry):
    text = MTLS.replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven")
    with serving(certs, registry, text) as (address, _):
        url = "https://%s/metrics" % address
        assert curl(certs, url, cert=None)[:2] == (0, 200)
        assert curl(certs, url)[:2] == (0, 200)
        rc, status, _, _, _ = curl(certs, url, cert="stranger")
        assert rc != 0 and status is None


@pytest.mark.parametrize("sans, allowed", [("[prometheus.tlsh]", True), ("['spiffe://tlsh/prometheus']", True),
                                           ("[someone.else, 127.0.0.1]", False)])
def test_client_allowed_sans(certs, registry, sans, allowed):
    text = MTLS.replace("basic_auth_users:", "  client_allowed_sans: %s\nbasic_auth_users:" % sans)
    with serving(certs, registry, text) as (address, _):
        rc, status, _, _, _ = curl(certs, "https://%s/metrics" % address)
        assert ((rc, status) == (0, 200)) == allowed, (rc, status)


def tls_client(address, certs, cert="client"):
    context = ssl.create_default_context(cafile=certs.path("ca.crt"))
    if cert:
        context.load_cert_chain(certs.path(cert + ".crt"), certs.path(cert + ".key"))
    host, port = address.split(":")
    raw = socket.create_connection((host, int(port)), timeout=20)
    return context.wrap_socket(raw, server_hostname=host)


def scrape(address, certs):
    """A whole HTTP/1.0 exchange over TLS with the raw ssl module: the response bytes."""
    import base64
    with tls_client(address, certs) as s:
        auth = base64.b64encode(("prom:" + PASSWORD).encode()).decode()
        s.sendall(("GET /metrics HTTP/1.0\r\nAuthorization: Basic %s\r\n\r\n" % auth).encode())
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return answer
            answer += chunk


def test_a_stalled_handshake_does_not_hold_up_a_scrape_and_is_closed(certs, registry, monkeypatch):
    monkeypatch.setattr(web, "HANDSHAKE_TIMEOUT", 2)
    with serving(certs, registry, MTLS) as (address, _):
        host, port = address.split(":")
        silent = socket.create_connection((host, int(port)), timeout=15)     # connects, sends nothing
        partial = socket.create_connection((host, int(port)), timeout=15)    # half a ClientHello
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        time.sleep(0.2)
        t0 = time.monotonic()
        rc, status, _, body, _ = curl(certs, "https://%s/metrics" % address)
        assert (rc, status) == (0, 200) and BODY_LINE in body
        assert time.monotonic() - t0 < 1.5  # not after the stalled handshakes' timeout
        for s in (silent, partial):
            assert s.recv(100) == b""  # closed by the server
            assert time.monotonic() - t0 < 6
            s.close()


def test_connection_limit_holds_new_connections_in_the_listen_queue(certs, registry, monkeypatch):
    """With room for 5 TLS connections, 5 silent ones fill it: a sixth waits (in the kernel's listen queue,
    not refused) until the handshake timeout frees a place, then is served."""
    monkeypatch.setattr(web, "HANDSHAKE_TIMEOUT", 2)
    file_limit = web.RESERVED_FDS + 16  # max_connections 16: 16 // 3 = 5 TLS connections
    with serving(certs, registry, MTLS, file_limit=file_limit) as (address, httpd):
        assert httpd.connections == 5 and httpd.waitress.adj.connection_limit == 5
        host, port = address.split(":")
        silent = [socket.create_connection((host, int(port)), timeout=15) for _ in range(5)]
        time.sleep(0.3)
        t0 = time.monotonic()
        answer = scrape(address, certs)
        waited = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.0 200 OK") and BODY_LINE.encode() in answer
        assert 1.0 < waited < 8, waited
        for s in silent:
            s.close()


def test_idle_tls_connection_is_closed_by_waitress(certs, registry, monkeypatch):
    monkeypatch.setattr(web, "IDLE_TIMEOUT", 1)
    with serving(certs, registry, MTLS) as (address, _):
        with tls_client(address, certs) as s:  # handshake done, no request
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert time.monotonic() - t0 < 10


def test_a_client_that_does_not_read_is_dropped_and_others_are_served(certs, monkeypatch):
    """Requests pipelined on one kept-alive connection and no byte read back: the TLS buffer fills, the
    link stops reading from waitress, and the client is dropped IDLE_TIMEOUT later, long before it has
    had its 20 responses of some 800 KB; a scrape meanwhile is served."""
    import base64
    monkeypatch.setattr(web, "IDLE_TIMEOUT", 1)
    big = CollectorRegistry()
    Counter("errnomon_test", "A test counter.", ["kind"], registry=big).labels(kind="tls").inc(3)
    for n in range(3000):
        Counter("errnomon_big_%d" % n, "A counter among many.", registry=big).inc()
    with serving(certs, big, MTLS) as (address, _):
        auth = base64.b64encode(("prom:" + PASSWORD).encode()).decode()
        request = ("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n\r\n" % auth).encode()
        hog = tls_client(address, certs)
        hog.sendall(request * 20)
        answer = scrape(address, certs)
        assert answer.startswith(b"HTTP/1.0 200 OK") and BODY_LINE.encode() in answer
        time.sleep(4)  # the stall, IDLE_TIMEOUT and then some
        received = 0
        hog.settimeout(10)
        with contextlib.suppress(OSError):
            while True:
                chunk = hog.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
        hog.close()
        # what loopback's socket buffers held (megabytes, autotuned) came through; the rest never did
        assert 0 < received < 10 * len(answer), (received, len(answer))


def test_100_concurrent_tls_scrapes_all_answered(certs, registry):
    with serving(certs, registry, MTLS) as (address, _):
        results = concurrently(100, lambda: scrape(address, certs).split(b"\r\n", 1)[0])
    assert results == [b"HTTP/1.0 200 OK"] * 100


def test_certificate_rotation_is_picked_up_by_the_next_handshake(certs, registry):
    for name in ("crt", "key"):
        shutil.copy(certs.path("server." + name), certs.path("tlsh-rot." + name))
    text = MTLS.replace("server.crt", "tlsh-rot.crt").replace("server.key", "tlsh-rot.key")
    with serving(certs, registry, text) as (address, _):
        def serial():
            with tls_client(address, certs) as s:
                return s.getpeercert()["serialNumber"]
        before = serial()
        # a new server certificate and key from the same CA, renamed into place as cert managers do
        certs._leaf("tlsh-new", "ca", "subjectAltName=IP:127.0.0.1")
        os.replace(certs.path("tlsh-new.key"), certs.path("tlsh-rot.key"))
        os.replace(certs.path("tlsh-new.crt"), certs.path("tlsh-rot.crt"))
        after = serial()
        assert after != before
        assert curl(certs, "https://%s/metrics" % address)[:2] == (0, 200)


def test_basic_auth_and_headers_on_plain_http(certs, registry):
    text = ("basic_auth_users:\n  prom: {hash}\nhttp_server_config:\n  headers:\n"
            "    X-Frame-Options: deny\n")
    with serving(certs, registry, text) as (address, httpd):
        assert httpd.scheme == "http"
        rc, status, headers, _, _ = curl(certs, "http://%s/metrics" % address, cert=None, user=None)
        assert (rc, status, headers["x-frame-options"]) == (0, 401, "deny")
        rc, status, headers, body, _ = curl(certs, "http://%s/metrics" % address, cert=None)
        assert (rc, status, headers["x-frame-options"]) == (0, 200, "deny") and BODY_LINE in body


def test_a_tls_port_refuses_connects_until_it_serves(certs, registry):
    """Bound at bind() (a busy address fails early), listening from start(): the DaemonSet's TCP probes
    connect only once errnomon serves."""
    path = certs.path("tlsh-web.yml")
    with open(path, "w") as f:
        f.write(MTLS.format(hash=hashed()))
    port = free_port()
    httpd = web.bind("127.0.0.1:%d" % port, "/metrics", registry, None, webconfig.Watcher(webconfig.load(path)))
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        web.start(httpd)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        httpd.shutdown()
        httpd.server_close()
