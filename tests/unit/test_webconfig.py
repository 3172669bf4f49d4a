"""monitor/webconfig.py: the exporter-toolkit web config file, each bad input one line; basic auth, headers
and the rate limit as WSGI middleware; reloads on change."""

import base64
import os
import ssl
import subprocess
import sys
import time

import pytest

from monitor import webconfig
from monitor.config import ConfigError

from .tls_certs import PASSWORD, Certs, hashed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def certs():
    c = Certs()
    yield c
    c.remove()


def write(certs, text, name="web.yml"):
    path = certs.path(name)
    with open(path, "w") as f:
        f.write(text)
    return path


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def load(certs, text):
    return webconfig.load(write(certs, text))


def error(certs, text):
    path = write(certs, text)
    with pytest.raises(ConfigError) as info:
        webconfig.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ": ")
    return message[len(path) + 2:]


def test_empty_file_is_plain_http_without_auth(certs):
    c = load(certs, "")
    assert (c.tls, c.users, c.headers, c.rate_limit, c.http2) == (None, {}, (), None, True)
    assert c.describe() == "no TLS, no basic auth"


def test_tls_with_relative_files_and_defaults(certs):
    c = load(certs, TLS)
    assert c.tls.client_auth == "NoClientCert" and c.tls.allowed_sans is None
    ctx = c.tls.context
    assert ctx.verify_mode == ssl.CERT_NONE
    assert (ctx.minimum_version, ctx.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert c.files == (certs.path("web.yml"), certs.path("server.crt"), certs.path("server.key"))


def test_client_certificates_sans_versions_ciphers_curve(certs):
    c = load(certs, TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n"
                          "  client_allowed_sans: [prometheus.tlsh, 127.0.0.1]\n  min_version: TLS13\n"
                          "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
                          "  prefer_server_cipher_suites: false\n  curve_preferences: [CurveP384]\n"
                          % certs.path("ca.crt"))
    ctx = c.tls.context
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert [x["name"] for x in ctx.get_ciphers() if x["protocol"] == "TLSv1.2"] == ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    assert c.tls.allowed_sans == frozenset({"prometheus.tlsh", "127.0.0.1"})
    assert len(ctx.get_ca_certs()) == 1
    assert c.files[-1] == certs.path("ca.crt")  # absolute: as given


def test_verify_if_given_without_a_ca_uses_the_system_cas_as_go_does(certs):
    c = load(certs, TLS + "  client_auth_type: VerifyClientCertIfGiven\n")
    assert c.tls.context.verify_mode == ssl.CERT_OPTIONAL


def test_every_go_cipher_name_maps_to_a_cipher_this_openssl_has():
    for go_name, openssl_name in webconfig.CIPHER_SUITES.items():
        if openssl_name:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.set_ciphers(openssl_name)
            assert openssl_name in [c["name"] for c in ctx.get_ciphers()], go_name


def test_inline_cert_key_and_client_ca(certs):
    def indented(name):
        with open(certs.path(name)) as f:
            return "".join("    " + line for line in f)
    c = load(certs, "tls_server_config:\n  cert: |\n%s  key: |\n%s  client_ca: |\n%s"
                    "  client_auth_type: RequireAndVerifyClientCert\n"
             % (indented("server.crt"), indented("server.key"), indented("ca.crt")))
    assert len(c.tls.context.get_ca_certs()) == 1
    assert c.files == (certs.path("web.yml"),)


def test_users_headers_rate_limit(certs):
    h = hashed()
    c = load(certs, "basic_auth_users:\n  alice: %s\nhttp_server_config:\n  http2: false\n  headers:\n"
                    "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
                    "    X-XSS-Protection: ''\nrate_limit:\n  interval: 1m30s\n  burst: 5\n" % h)
    assert c.users == {"alice": h.encode()}
    assert c.headers == (("X-Frame-Options", "deny"), ("Strict-Transport-Security", "max-age=31536000"))
    assert c.http2 is False and c.rate_limit == (90.0, 5)
    assert c.describe() == "no TLS, basic auth for 1 users, rate limit 1 per 90s, burst 5"


@pytest.mark.parametrize("text, expected", [
    ("tls_server_config:\n  cert_file: x\n  nope: 1\n", "tls_server_config.nope: unknown key; valid keys here: "
     + ", ".join(webconfig.TLS_KEYS)),
    ("tls_srever_config: {}\n", "tls_srever_config: unknown key; valid keys here: tls_server_config, "
     "http_server_config, basic_auth_users, rate_limit; did you mean 'tls_server_config'?"),
    ("tls_server_config:\n  key_file: server.key\n", "tls_server_config: missing one of cert or cert_file: name the "
     "server's certificate (PEM)"),
    ("tls_server_config:\n  cert_file: server.crt\n", "tls_server_config: missing one of key or key_file: name the "
     "server's private key (PEM)"),
    ("tls_server_config:\n  min_version: TLS13\n", "tls_server_config: min_version set but no certificate: add "
     "cert_file and key_file, or remove the section"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n", "tls_server_config.client_auth_type: RequireAnyClientCert "
     "(accept a client certificate without verifying it) cannot be done with Python's ssl module, and is not safe: "
     "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"),
    (TLS + "  client_auth_type: Sometimes\n", "tls_server_config.client_auth_type: unknown value 'Sometimes': use "
     "one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
    (TLS + "  client_ca_file: ca.crt\n", "tls_server_config: a client CA is configured but client_auth_type is "
     "NoClientCert: set client_auth_type: RequireAndVerifyClientCert"),
    (TLS + "  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans: needs client certificates: set "
     "client_auth_type: RequireAndVerifyClientCert"),
    (TLS + "  min_version: TLS9\n", "tls_server_config.min_version: unknown TLS version 'TLS9': use one of TLS10, "
     "TLS11, TLS12, TLS13"),
    (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "tls_server_config: min_version is above max_version: "
     "lower min_version"),
    (TLS + "  cipher_suites: [TLS_INVENTED]\n", "tls_server_config.cipher_suites: unknown cipher 'TLS_INVENTED': use "
     "Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "tls_server_config.cipher_suites: only TLS 1.3 suites "
     "listed, which cannot be chosen (as in Go): list TLS 1.2 suites too, or set min_version: TLS13"),
    (TLS + "  curve_preferences: [CurveP999]\n", "tls_server_config.curve_preferences: unknown curve 'CurveP999': use "
     "one of CurveP256, CurveP384, CurveP521, X25519"),
    (TLS + "  curve_preferences: [CurveP256, X25519]\n", "tls_server_config.curve_preferences: 2 curves listed, but "
     "Python's ssl module can offer only one: keep one (e.g. [CurveP256]), or remove the key for OpenSSL's defaults"),
    (TLS + "  curve_preferences: [X25519]\n", "tls_server_config.curve_preferences: X25519 cannot be chosen with "
     "Python's ssl module (only CurveP256, CurveP384, CurveP521): remove the key, OpenSSL's default order starts "
     "with X25519"),
    ("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n", "tls_server_config: cannot read {dir}/"
     "nope.crt: No such file or directory: check cert_file and key_file"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n", "tls_server_config: the certificate "
     "and key do not load (KEY_VALUES_MISMATCH): give a PEM certificate and its unencrypted PEM private key"),
    ("tls_server_config:\n  cert_file: web.yml\n  key_file: server.key\n", "tls_server_config: the certificate "
     "and key do not load ([SSL] PEM lib): give a PEM certificate and its unencrypted PEM private key"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: missing.crt\n",
     "tls_server_config.client_ca_file: cannot read {dir}/missing.crt: No such file or directory"),
    (TLS + "  cert: x\n", "tls_server_config: both cert and cert_file set: keep one"),
    ("basic_auth_users:\n  alice: plain\n", "basic_auth_users.alice: not a bcrypt hash (like $2y$10$ and 53 more "
     "characters): hash it with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"),
    ("basic_auth_users:\n  alice: $2y$03$" + "a" * 53 + "\n", "basic_auth_users.alice: bcrypt cost 03 is outside "
     "4-31: hash it with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"),
    ("basic_auth_users: [alice]\n", "basic_auth_users: expected a mapping of user: bcrypt hash, got ['alice'] (list)"),
    ("http_server_config:\n  headers:\n    X-Powered-By: me\n", "http_server_config.headers.X-Powered-By: unknown "
     "key; valid keys here: Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, "
     "Content-Security-Policy"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "http_server_config.headers.X-Frame-Options: "
     "invalid value 'allow': use one of deny, sameorigin"),
    ("http_server_config:\n  http2: maybe\n", "http_server_config.http2: expected true or false, got 'maybe' (str)"),
    ("rate_limit:\n  interval: soon\n", "rate_limit.interval: 'soon' is not a duration: use e.g. 1s, 500ms or 1m30s"),
    ("rate_limit:\n  interval: 1s\n  burst: -1\n", "rate_limit.burst: must be between 0 and 2147483648, got -1"),
    ("tls_server_config: [\n", "line 2: invalid YAML: expected the node content, but found '<stream end>' (while "
     "parsing a flow node)"),
])
def test_each_bad_input_is_one_line(certs, text, expected):
    assert error(certs, text) == expected.format(dir=certs.dir)


def test_unreadable_file_names_the_flag(certs):
    with pytest.raises(ConfigError) as info:
        webconfig.load(certs.path("absent.yml"))
    assert str(info.value) == ("%s: cannot read web config file: No such file or directory: check "
                               "--web.config.file" % certs.path("absent.yml"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_cli_bad_web_config_is_one_line_and_status_2(certs):
    path = write(certs, "tls_server_config:\n  cert_file: server.crt\n", "bad.yml")
    for extra in ([], ["--config.check"]):
        r = run_cli("--config.file=config.example.yaml", "--web.config.file=" + path, *extra)
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr == ("errnomon: error: %s: tls_server_config: missing one of key or key_file: name the "
                            "server's private key (PEM)\n" % path)


def test_cli_config_check_validates_the_web_config(certs):
    path = write(certs, TLS + "basic_auth_users:\n  prom: %s\n" % hashed(), "good.yml")
    r = run_cli("--config.check", "--config.file=config.example.yaml", "--web.config.file=" + path)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == ("errnomon: config config.example.yaml is valid\nerrnomon: web config %s is valid: TLS "
                        "(client certificates: NoClientCert), basic auth for 1 users\n" % path)


def test_help_documents_the_flag_and_the_default_exposure():
    r = run_cli("--help")
    text = " ".join(r.stdout.split())
    assert "--web.config.file WEB_CONFIG_FILE exporter-toolkit web config file: TLS, client certificates" in text
    assert "(default: :9779, every interface: anyone who can reach the host can read the metrics" in text


# ---------------------------------------------------------------------------
# reloads


def test_watcher_reloads_on_change_and_keeps_the_last_good_config(certs, caplog):
    path = write(certs, "basic_auth_users:\n  alice: %s\n" % hashed(), "watched.yml")
    w = webconfig.Watcher(webconfig.load(path))
    first = w.current()
    assert w.current() is first  # nothing changed: the same object, no read
    time.sleep(0.01)
    write(certs, "basic_auth_users:\n  bob: %s\n" % hashed(), "watched.yml")
    assert set(w.current().users) == {"bob"}
    write(certs, "basic_auth_users: [\n", "watched.yml")
    assert set(w.current().users) == {"bob"}
    assert "web config not reloaded, keeping the running one: %s: line 2: invalid YAML" % path in caplog.text
    write(certs, TLS, "watched.yml")
    assert w.current().tls is None
    assert "TLS cannot be switched on while errnomon runs: restart it" in caplog.text


def test_watcher_rereads_a_rotated_certificate(certs):
    import shutil
    for name in ("server", "client"):
        shutil.copy(certs.path(name + ".crt"), certs.path("rot.crt" if name == "server" else "rot-client.crt"))
    shutil.copy(certs.path("server.key"), certs.path("rot.key"))
    path = write(certs, "tls_server_config:\n  cert_file: rot.crt\n  key_file: rot.key\n", "rot.yml")
    w = webconfig.Watcher(webconfig.load(path))
    first = w.current()
    # a certificate whose key does not match yet (mid-rotation): kept; then the key arrives: taken
    os.replace(certs.path("rot-client.crt"), certs.path("rot.crt"))
    assert w.current() is first
    shutil.copy(certs.path("client.key"), certs.path("rot.key"))
    assert w.current() is not first and w.current().tls is not None


# ---------------------------------------------------------------------------
# the middleware


def call(app, authorization=None, method="GET"):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/metrics"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, headers
    body = b"".join(app(environ, start_response))
    return answer["status"], dict(answer["headers"]), body


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def inner(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"metrics\n"]


def guard(certs, text):
    return webconfig.Guard(inner, webconfig.Watcher(load(certs, text)))


def test_basic_auth(certs):
    app = guard(certs, "basic_auth_users:\n  alice: %s\nhttp_server_config:\n  headers:\n"
                       "    X-Content-Type-Options: nosniff\n" % hashed())
    unauthorized = ("401 Unauthorized", {"WWW-Authenticate": "Basic", "Content-Type": "text/plain; charset=utf-8",
                                         "X-Content-Type-Options": "nosniff", "Content-Length": "13"},
                    b"Unauthorized\n")
    for header in (None, basic("alice", "wrong"), basic("mallory", PASSWORD), "Bearer x", "Basic !!!",
                   "Basic " + base64.b64encode(b"alice").decode(), basic("alice", PASSWORD + "x" * 80)):
        assert call(app, header) == unauthorized, header
    assert call(app, basic("alice", PASSWORD)) == (
        "200 OK", {"Content-Type": "text/plain", "X-Content-Type-Options": "nosniff"}, b"metrics\n")
    assert call(app, "basic " + basic("alice", PASSWORD).split()[1])[0] == "200 OK"  # the scheme is case-blind
    # HEAD: the same status and headers, no body (a body would be read as the next response)
    assert call(app, method="HEAD") == unauthorized[:2] + (b"",)


def test_verified_passwords_are_cached(certs, monkeypatch):
    app = guard(certs, "basic_auth_users:\n  alice: %s\n" % hashed())
    checks = []
    real = app.bcrypt.checkpw

    class Counting:
        @staticmethod
        def checkpw(password, hashed_password):
            checks.append(password)
            return real(password, hashed_password)
    app.bcrypt = Counting
    for _ in range(5):
        assert call(app, basic("alice", PASSWORD))[0] == "200 OK"
        assert call(app, basic("alice", "wrong"))[0] == "401 Unauthorized"
    assert checks == [PASSWORD.encode(), b"wrong"]
    assert not any(PASSWORD.encode() in key for key in app.cache)  # the cache holds digests


def test_a_password_past_72_bytes_is_cut_as_bcrypt_does(certs):
    long = "p" * 72
    app = guard(certs, "basic_auth_users:\n  alice: %s\n" % hashed(long))
    assert call(app, basic("alice", long + "ignored"))[0] == "200 OK"


def test_rate_limit_answers_429(certs):
    app = guard(certs, "rate_limit:\n  interval: 1h\n  burst: 2\n")
    assert [call(app)[0] for _ in range(3)] == ["200 OK", "200 OK", "429 Too Many Requests"]


def test_rate_limiter_refills():
    now = [0.0]
    limiter = webconfig.RateLimiter(0.5, 1, clock=lambda: now[0])
    assert (limiter.allow(), limiter.allow()) == (True, False)
    now[0] = 0.5
    assert (limiter.allow(), limiter.allow()) == (True, False)


def test_allowed_san_compares_go_string_forms():
    cert = {"subjectAltName": (("DNS", "a.example"), ("IP Address", "2001:DB8:0:0:0:0:0:1"), ("URI", "spiffe://x"),
                               ("email", "ops@example.org"), ("DirName", "ignored"))}
    for name in ("a.example", "2001:db8::1", "spiffe://x", "ops@example.org"):
        assert webconfig.allowed_san(cert, frozenset({name}))
    assert not webconfig.allowed_san(cert, frozenset({"ignored", "b.example"}))
    assert not webconfig.allowed_san(None, frozenset({"a.example"}))


def test_the_deploy_example_loads_beside_its_certificates(certs, tmp_path):
    """deploy/web-config.yml, with the PEM files it names beside it (as systemd's credentials directory and
    the Kubernetes Secret lay them out): valid, and its example user's password is the one it says."""
    import bcrypt
    import shutil
    for source, target in (("server.crt", "tls.crt"), ("server.key", "tls.key"), ("ca.crt", "ca.crt")):
        shutil.copy(certs.path(source), tmp_path / target)
    shutil.copy(os.path.join(REPO, "deploy", "web-config.yml"), tmp_path / "web-config.yml")
    c = webconfig.load(str(tmp_path / "web-config.yml"))
    assert c.describe() == "TLS (client certificates: RequireAndVerifyClientCert), basic auth for 1 users"
    assert c.http2 is False
    assert bcrypt.checkpw(b"change-me", c.users["prometheus"])
