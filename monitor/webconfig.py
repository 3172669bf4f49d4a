"""--web.config.file: TLS, client certificates, basic auth, headers and a rate limit for the metrics port.

The file has the format of Prometheus' exporter-toolkit (docs/web-configuration.md there; web/tls_config.go
and web/handler.go are what it is checked against), so one file can serve errnomon and the node_exporter
beside it. As there, an unknown key is an error, relative file names are relative to the file's directory,
and the file (with the certificate, key and CA files it names) is re-read when it changes: here on the
next connection or request after a change of any of them, found by stat(); a changed file that does not
load is logged and the last good one kept (exporter-toolkit would refuse connections meanwhile). Whether
TLS is on at all is fixed at start-up, as there.

What Python's ssl module cannot do is refused with one line, never ignored: client_auth_type
RequestClientCert and RequireAnyClientCert (Python verifies every client certificate it asks for), more
than one curve_preferences entry, or X25519 there (it sets one NIST curve); `http2: true` is accepted but served as HTTP/1.1
(logged at start-up). TLS 1.3 names in cipher_suites are accepted and, as in Go, change nothing.
"""

import base64
import binascii
import hashlib
import ipaddress
import logging
import os
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

from . import config as config_mod
from .config import ConfigError

log = logging.getLogger("errnomon.web")

FLAG = "--web.config.file"
TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
            "curve_preferences")
HTTP_KEYS = ("http2", "headers")
RATE_KEYS = ("interval", "burst")

CLIENT_AUTH = {  # exporter-toolkit's names -> what ssl does with the client's certificate
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's crypto/tls names (tls.CipherSuites(); the TLS_RSA_ ones are in it before Go 1.23) -> OpenSSL's.
# TLS 1.3 suites are not configurable in Go, nor by set_ciphers(): None.
CIPHER_SUITES = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Go's names -> OpenSSL's. X25519: None, as ssl's set_ecdh_curve() takes only the NIST curves.
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": None}
# The headers exporter-toolkit lets a file set (web/handler.go extraHTTPHeaders), with their allowed values
HEADERS = {"Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
           "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None}
# What Go's bcrypt.Cost() accepts: $2<minor>$<cost 04-31>$<53 characters of salt and hash>
BCRYPT_RE = re.compile(r"^\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
BCRYPT_HINT = "hash it with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
GO_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class TLS:
    context: ssl.SSLContext
    client_auth: str
    allowed_sans: Optional[FrozenSet[str]]  # None: any verified client certificate


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: Optional[TLS]
    users: Dict[str, bytes]                     # user -> bcrypt hash
    headers: Tuple[Tuple[str, str], ...]
    http2: bool
    rate_limit: Optional[Tuple[float, int]]     # (seconds between requests, burst)
    files: Tuple[str, ...]                      # the file and those it names: a change of any reloads it

    def describe(self):
        """One phrase for the start-up log."""
        parts = []
        if self.tls:
            parts.append("TLS (client certificates: %s%s)" % (
                self.tls.client_auth, ", allowed SANs: %d" % len(self.tls.allowed_sans)
                if self.tls.allowed_sans is not None else ""))
        else:
            parts.append("no TLS")
        parts.append("basic auth for %d users" % len(self.users) if self.users else "no basic auth")
        if self.rate_limit:
            parts.append("rate limit 1 per %gs, burst %d" % self.rate_limit)
        return ", ".join(parts)


class _Parser(config_mod._Parser):
    def strings(self, value, path):
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(path, "expected a list of strings, got %s" % config_mod._describe(value))
        return value

    def string(self, value, path):
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(path, "expected a string, got %s" % config_mod._describe(value))
        return value

    def choice(self, value, path, choices, what):
        value = self.string(value, path)
        if value not in choices:
            raise self.error(path, "unknown %s %r: use one of %s" % (what, value, ", ".join(choices)))
        return value

    def go_duration(self, value, path):
        """A Go time.Duration as YAML gives it to exporter-toolkit: "1s", "1m30s", "250ms", 0."""
        if config_mod._is_int(value):
            return value * 1e-9  # yaml.v2 reads a bare number as nanoseconds
        text = self.string(value, path)
        body = text.lstrip("+")
        if body == "0":
            return 0.0
        if not body or GO_DURATION_RE.sub("", body):
            raise self.error(path, "%r is not a duration: use e.g. 1s, 500ms or 1m30s" % text)
        return sum(float(n) * GO_UNITS[u] for n, u in GO_DURATION_RE.findall(body))

    def parse(self, data):
        top = self.mapping(data, "", TOP_KEYS)
        directory = os.path.dirname(os.path.abspath(self.source))
        files = [self.source]
        tls = self.tls(self.mapping(top.get("tls_server_config"), "tls_server_config", TLS_KEYS), directory,
                       files)
        http = self.mapping(top.get("http_server_config"), "http_server_config", HTTP_KEYS)
        http2 = self.boolean(http["http2"], "http_server_config.http2") if "http2" in http else True
        headers = self.headers(http.get("headers"))
        users = self.users(top.get("basic_auth_users"))
        rate = self.mapping(top.get("rate_limit"), "rate_limit", RATE_KEYS)
        interval = self.go_duration(rate.get("interval", 0), "rate_limit.interval")
        if interval < 0:
            raise self.error("rate_limit.interval", "must be 0 (no limit) or positive")
        burst = self.integer(rate.get("burst", 0), "rate_limit.burst", 0, 1 << 31)
        return WebConfig(self.source, tls, users, headers, http2, (interval, burst) if interval else None,
                         tuple(files))

    def headers(self, value):
        headers = self.mapping(value, "http_server_config.headers", tuple(HEADERS))
        out = []
        for name, text in headers.items():
            path = "http_server_config.headers." + name
            text = self.string(text, path)
            allowed = HEADERS[name]
            if allowed and text not in allowed:
                raise self.error(path, "invalid value %r: use one of %s" % (text, ", ".join(allowed)))
            if text:  # exporter-toolkit: "Unset if blank"
                out.append((name, text))
        return tuple(out)

    def users(self, value):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error("basic_auth_users", "expected a mapping of user: bcrypt hash, got %s"
                             % config_mod._describe(value))
        users = {}
        for user, hashed in value.items():
            if not isinstance(user, str):
                raise self.error("basic_auth_users", "user name %s is not a string: quote it"
                                 % config_mod._short(user))
            path = "basic_auth_users." + user
            match = BCRYPT_RE.match(hashed) if isinstance(hashed, str) else None
            if not match:
                raise self.error(path, "not a bcrypt hash (like $2y$10$ and 53 more characters): " + BCRYPT_HINT)
            if not 4 <= int(match.group(1)) <= 31:
                raise self.error(path, "bcrypt cost %s is outside 4-31: %s" % (match.group(1), BCRYPT_HINT))
            users[user] = hashed.encode()
        return users

    def tls(self, section, directory, files):
        given = {k for k, v in section.items() if v not in (None, "", [])}
        enabling = given & {"cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file",
                            "client_auth_type"}
        if not enabling:
            if given:
                raise self.error("tls_server_config", "%s set but no certificate: add cert_file and key_file, "
                                 "or remove the section" % ", ".join(sorted(given)))
            return None
        for inline, name in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
            if inline in given and name in given:
                raise self.error("tls_server_config", "both %s and %s set: keep one" % (inline, name))
        if not given & {"cert", "cert_file"}:
            raise self.error("tls_server_config", "missing one of cert or cert_file: name the server's "
                             "certificate (PEM)")
        if not given & {"key", "key_file"}:
            raise self.error("tls_server_config", "missing one of key or key_file: name the server's private "
                             "key (PEM)")

        def path_of(key):
            name = self.string(section[key], "tls_server_config." + key)
            full = os.path.join(directory, name)  # an absolute name stays as it is
            files.append(full)
            return full

        client_auth = self.string(section.get("client_auth_type"), "tls_server_config.client_auth_type")
        client_auth = client_auth or "NoClientCert"
        if client_auth in UNVERIFIED_CLIENT_AUTH:
            raise self.error("tls_server_config.client_auth_type", "%s (accept a client certificate without "
                             "verifying it) cannot be done with Python's ssl module, and is not safe: use "
                             "RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
                             % client_auth)
        if client_auth not in CLIENT_AUTH:
            raise self.error("tls_server_config.client_auth_type", "unknown value %r: use one of %s"
                             % (client_auth, ", ".join(CLIENT_AUTH)))
        has_ca = bool(given & {"client_ca", "client_ca_file"})
        if has_ca and client_auth == "NoClientCert":
            raise self.error("tls_server_config", "a client CA is configured but client_auth_type is "
                             "NoClientCert: set client_auth_type: RequireAndVerifyClientCert")
        sans = None
        if "client_allowed_sans" in section and section["client_allowed_sans"] is not None:
            sans = frozenset(self.strings(section["client_allowed_sans"], "tls_server_config.client_allowed_sans"))
            if client_auth == "NoClientCert":
                raise self.error("tls_server_config.client_allowed_sans", "needs client certificates: set "
                                 "client_auth_type: RequireAndVerifyClientCert")

        lowest = TLS_VERSIONS[self.choice(section.get("min_version") or "TLS12", "tls_server_config.min_version",
                                          tuple(TLS_VERSIONS), "TLS version")]
        highest = TLS_VERSIONS[self.choice(section.get("max_version") or "TLS13", "tls_server_config.max_version",
                                           tuple(TLS_VERSIONS), "TLS version")]
        if lowest > highest:
            raise self.error("tls_server_config", "min_version is above max_version: lower min_version")
        suites = self.strings(section.get("cipher_suites"), "tls_server_config.cipher_suites")
        for name in suites:
            if name not in CIPHER_SUITES:
                raise self.error("tls_server_config.cipher_suites", "unknown cipher %r: use Go's names, e.g. "
                                 "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" % name)
        openssl_suites = [CIPHER_SUITES[n] for n in suites if CIPHER_SUITES[n]]
        if suites and not openssl_suites and lowest < ssl.TLSVersion.TLSv1_3:
            raise self.error("tls_server_config.cipher_suites", "only TLS 1.3 suites listed, which cannot be "
                             "chosen (as in Go): list TLS 1.2 suites too, or set min_version: TLS13")
        prefer = (self.boolean(section["prefer_server_cipher_suites"], "tls_server_config.prefer_server_cipher_suites")
                  if section.get("prefer_server_cipher_suites") is not None else True)
        curves = self.strings(section.get("curve_preferences"), "tls_server_config.curve_preferences")
        for name in curves:
            if name not in CURVES:
                raise self.error("tls_server_config.curve_preferences", "unknown curve %r: use one of %s"
                                 % (name, ", ".join(CURVES)))
        if curves and CURVES[curves[0]] is None:
            raise self.error("tls_server_config.curve_preferences", "%s cannot be chosen with Python's ssl module "
                             "(only CurveP256, CurveP384, CurveP521): remove the key, OpenSSL's default order "
                             "starts with X25519" % curves[0])
        if len(curves) > 1:
            raise self.error("tls_server_config.curve_preferences", "%d curves listed, but Python's ssl module "
                             "can offer only one: keep one (e.g. [CurveP256]), or remove the key for "
                             "OpenSSL's defaults" % len(curves))

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.minimum_version, context.maximum_version = lowest, highest
        except ValueError as e:
            raise self.error("tls_server_config", "TLS versions refused by this OpenSSL (%s): use TLS12 or "
                             "TLS13" % e)
        if prefer:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if openssl_suites:
            context.set_ciphers(":".join(openssl_suites))
        if curves:
            context.set_ecdh_curve(CURVES[curves[0]])

        self.load_pair(context, section, given, path_of)

        context.verify_mode = CLIENT_AUTH[client_auth]
        if client_auth != "NoClientCert":
            try:
                if "client_ca_file" in given:
                    name = path_of("client_ca_file")
                    try:
                        context.load_verify_locations(cafile=name)
                    except OSError as e:
                        if isinstance(e, ssl.SSLError):
                            raise
                        raise self.error("tls_server_config.client_ca_file", "cannot read %s: %s"
                                         % (name, e.strerror or e))
                elif "client_ca" in given:
                    context.load_verify_locations(cadata=self.string(section["client_ca"], "tls_server_config.client_ca"))
                else:  # as Go's crypto/tls with no ClientCAs: the system's CAs
                    context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            except ssl.SSLError as e:
                raise self.error("tls_server_config", "the client CA is not a PEM certificate (%s): give the "
                                 "CA certificate that signed the clients' certificates" % _reason(e))
        return TLS(context, client_auth, sans)

    def load_pair(self, context, section, given, path_of):
        """The server's certificate and key, from files or inline PEM (through memfds: ssl reads only files)."""
        opened = []
        try:
            names = []
            for inline, key in (("cert", "cert_file"), ("key", "key_file")):
                if key in given:
                    names.append(path_of(key))
                    continue
                text = self.string(section[inline], "tls_server_config." + inline)
                fd = os.memfd_create("errnomon-" + inline, os.MFD_CLOEXEC)
                opened.append(fd)
                os.write(fd, text.encode())
                names.append("/proc/self/fd/%d" % fd)
            for name in names:
                if name.startswith("/proc/self/fd/"):
                    continue
                try:
                    with open(name, "rb"):
                        pass
                except OSError as e:
                    raise self.error("tls_server_config", "cannot read %s: %s: check cert_file and key_file"
                                     % (name, e.strerror or e))
            try:
                context.load_cert_chain(names[0], names[1])
            except ssl.SSLError as e:
                raise self.error("tls_server_config", "the certificate and key do not load (%s): give a PEM "
                                 "certificate and its unencrypted PEM private key" % _reason(e))
        finally:
            for fd in opened:
                os.close(fd)


def _reason(error):
    """OpenSSL's reason for an ssl.SSLError, without CPython's source line."""
    text = error.reason or (error.args[1] if len(error.args) > 1 else str(error))
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(text))


def parse(text, path):
    """The web config in `text`, read from `path` (relative names are relative to its directory)."""
    return config_mod.checked(text, path, lambda data: _Parser(path).parse(data))


def load(path):
    return parse(config_mod.read(path, "web config file", FLAG), path)


def _signature(files):
    out = []
    for name in files:
        try:
            st = os.stat(name)
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class Watcher:
    """The current web config: re-read when the file or a file it names has changed (stat() at each call:
    a few microseconds). A file that no longer loads, or that would switch TLS on or off (fixed at start),
    is logged once and the last good config kept."""

    def __init__(self, config):
        self.config = config
        self.signature = _signature(config.files)
        self.lock = threading.Lock()

    def current(self):
        config = self.config
        signature = _signature(config.files)
        if signature == self.signature:
            return config
        with self.lock:
            if self.config is not config:  # another thread has just reloaded it
                return self.config
            self.signature = signature
            try:
                new = load(config.path)
            except ConfigError as e:
                log.error("web config not reloaded, keeping the running one: %s", e)
                return config
            if (new.tls is None) != (config.tls is None):
                log.error("web config not reloaded, keeping the running one: %s: TLS cannot be switched %s "
                          "while errnomon runs: restart it", config.path, "on" if new.tls else "off")
                return config
            self.config, self.signature = new, _signature(new.files)
            log.info("web config reloaded from %s: %s", new.path, new.describe())
            return new


def allowed_san(peercert, allowed):
    """Whether the verified client certificate (ssl's getpeercert() dict) has a DNS, IP, e-mail or URI
    subject alternative name in `allowed`, compared as exporter-toolkit does (Go's string forms)."""
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        elif kind not in ("DNS", "email", "URI"):
            continue
        if value in allowed:
            return True
    return False


class RateLimiter:
    """A token bucket like Go's rate.NewLimiter(rate.Every(interval), burst): `burst` tokens, one more
    every `interval` seconds."""

    def __init__(self, interval, burst, clock=time.monotonic):
        self.interval, self.burst, self.clock = interval, burst, clock
        self.tokens, self.last = float(burst), clock()
        self.lock = threading.Lock()

    def allow(self):
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) / self.interval)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


# exporter-toolkit's stand-in for an unknown user, so that a wrong name costs as much as a wrong password
# (a bcrypt hash of "fakepassword", cost 10).
FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
CACHE_SIZE = 100


class Guard:
    """WSGI middleware: the web config's rate limit, headers and basic auth in front of `app`, as
    exporter-toolkit's handler does them (web/handler.go): every path, 429 when over the rate limit, 401
    with WWW-Authenticate: Basic without the right user and password. A bcrypt check costs tens of
    milliseconds by design, so verified (user, hash, password) outcomes are cached (CACHE_SIZE, random
    eviction; keyed by a salted digest, not the password) and checks run one at a time."""

    def __init__(self, app, watcher):
        import bcrypt  # only a web config needs it
        self.bcrypt = bcrypt
        self.app = app
        self.watcher = watcher
        self.cache = {}
        self.salt = os.urandom(16)
        self.cache_lock = threading.Lock()
        self.bcrypt_lock = threading.Lock()
        self.limiter = None
        self.limiter_for = None

    def _limiter(self, rate_limit):
        if rate_limit != self.limiter_for:  # changed by a reload (GIL: a race makes at most a fresh bucket)
            self.limiter = RateLimiter(*rate_limit) if rate_limit else None
            self.limiter_for = rate_limit
        return self.limiter

    def _verified(self, users, user, password):
        hashed = users.get(user)
        known = hashed is not None
        hashed = hashed if known else FAKE_HASH
        key = hashlib.sha256(b"\0".join((self.salt, user.encode("utf-8", "surrogateescape"), hashed,
                                         password))).digest()
        with self.cache_lock:
            ok = self.cache.get(key)
        if ok is None:
            with self.bcrypt_lock:
                try:
                    # bcrypt reads at most 72 bytes (Go's too); pyca's bcrypt 5 refuses longer ones instead
                    ok = self.bcrypt.checkpw(password[:72], hashed)
                except ValueError:  # a NUL byte, or a hash this bcrypt cannot read
                    ok = False
            with self.cache_lock:
                if len(self.cache) >= CACHE_SIZE:
                    for victim in random.sample(list(self.cache), max(1, len(self.cache) // 10)):
                        del self.cache[victim]
                self.cache[key] = ok
        return ok and known

    def __call__(self, environ, start_response):
        config = self.watcher.current()
        extra = list(config.headers)

        def start(status, headers, exc_info=None):
            return start_response(status, list(headers) + extra, exc_info)

        head = environ.get("REQUEST_METHOD") == "HEAD"
        limiter = self._limiter(config.rate_limit)
        if limiter is not None and not limiter.allow():
            return _error(start, "429 Too Many Requests", [], head)
        if not config.users:
            return self.app(environ, start)
        credentials = _basic_auth(environ.get("HTTP_AUTHORIZATION", ""))
        if credentials is not None and self._verified(config.users, *credentials):
            return self.app(environ, start)
        return _error(start, "401 Unauthorized", [("WWW-Authenticate", "Basic")], head)


def _error(start, status, headers, head):
    """A plain-text error; for HEAD without its body (as web._head_as_get: a kept-alive connection stays in step)."""
    body = status.split(" ", 1)[1].encode() + b"\n"
    start(status, headers + [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
                             ("Content-Length", str(len(body)))])
    return [b""] if head else [body]


def _basic_auth(header):
    """(user, password bytes) of an Authorization: Basic header, or None (as Go's Request.BasicAuth)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password
