"""The HTTP client side of `errnomon top` and `errnomon errors`: one GET against a running errnomon, with the
TLS and basic-auth settings a hardened endpoint (--web.config.file) asks of its clients.

Standard library only, no bcc: both commands run as any user on any machine. Every failure the network, the
endpoint or a bad flag can cause is a one-line message (ClientError, or the string options() returns).
"""

import base64
import http.client
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request


class ClientError(Exception):
    """A GET that did not answer 200: str() is one line saying why; status: the HTTP status, if any."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def add_arguments(parser):
    """The flags both commands take to reach an endpoint behind TLS, client certificates or basic auth."""
    g = parser.add_argument_group("TLS and authentication (an errnomon run with --web.config.file)")
    g.add_argument("--ca-file", default="", metavar="FILE",
                   help="CA certificates (PEM) to verify the server with (default: the system's)")
    g.add_argument("--cert-file", default="", metavar="FILE", help="client certificate (PEM), for client_auth_type")
    g.add_argument("--key-file", default="", metavar="FILE", help="the client certificate's key (PEM)")
    g.add_argument("--insecure", action="store_true", help="do not verify the server's certificate or name")
    g.add_argument("--username", default="", help="basic auth user")
    g.add_argument("--password-file", default="", metavar="FILE",
                   help="file holding the basic auth password (its first line), so it is not in argv")


def options(args):
    """(Client, None) from parsed flags, or (None, one-line problem naming the flag and the fix)."""
    if bool(args.cert_file) != bool(args.key_file):
        return None, "--cert-file and --key-file go together: give both, or neither"
    if args.password_file and not args.username:
        return None, "--password-file needs --username: give the basic auth user too"
    password = None
    if args.username:
        if not args.password_file:
            return None, "--username needs --password-file: put the password in a file only you can read"
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            return None, "--password-file %s cannot be read (%s): give a readable UTF-8 file" % (
                args.password_file, getattr(e, "strerror", None) or e)
    try:
        return Client(args.ca_file, args.cert_file, args.key_file, args.insecure, args.username, password), None
    except ClientError as e:
        return None, str(e)


class Client:
    def __init__(self, ca_file="", cert_file="", key_file="", insecure=False, username="", password=None):
        self.auth = None
        if username:
            token = base64.b64encode(("%s:%s" % (username, password or "")).encode()).decode()
            self.auth = "Basic " + token
        try:
            ctx = ssl.create_default_context(cafile=ca_file or None)
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError, ValueError) as e:
            which = "--ca-file %s" % ca_file if ca_file and not cert_file else "--cert-file/--key-file"
            raise ClientError("%s cannot be loaded (%s): give PEM files you can read" % (
                which, getattr(e, "strerror", None) or e))
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
        self.has_cert = bool(cert_file)

    def get(self, url, timeout=5.0, accept=None):
        """The body of a 200 answer; anything else raises ClientError."""
        req = urllib.request.Request(url)
        if self.auth:
            req.add_header("Authorization", self.auth)
        if accept:
            req.add_header("Accept", accept)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.read()
        # ValueError: not a URL urllib can open; HTTPException: a broken HTTP answer (http.client's own)
        except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException) as e:
            text = reason(e)
            if (url.startswith("https:") and not self.has_cert
                    and isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError))):
                # TLS 1.3 servers refuse a missing client certificate after the handshake, by closing
                text += " (does the server want a client certificate? give --cert-file and --key-file)"
            raise ClientError(text, getattr(e, "code", None))


def reason(e):
    """A short, one-line reason for a failed GET (for a 4xx, with the first line of the answer's body:
    errnomon says there what was wrong with the request)."""
    if isinstance(e, urllib.error.HTTPError):
        text = "HTTP %d %s" % (e.code, e.reason)
        if e.code == 401:
            text += " (give --username and --password-file)"
        elif 400 <= e.code < 500:
            try:
                first = e.read(512).decode("utf-8", "replace").strip().splitlines()
            except (OSError, http.client.HTTPException):
                first = []
            if first:
                text += ": " + first[0][:300]
        return text
    if isinstance(e, urllib.error.URLError):
        e = e.reason
    if isinstance(e, ssl.SSLCertVerificationError):
        return "TLS: %s (give --ca-file, or --insecure)" % (e.verify_message or e.reason)
    if isinstance(e, ssl.SSLError):
        return "TLS: %s" % (e.reason or e)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def check_url(url, example):
    """None if `url` is an http(s) URL urllib can open, else what is wrong (one line)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as e:
        return "--url %r is not a URL (%s): use e.g. %s" % (url, e, example)
    if any(c.isspace() or not c.isprintable() for c in url):
        return "--url %s holds spaces or control characters: use e.g. %s" % (ascii(url), example)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "--url %r is not an http:// or https:// URL with a host: use e.g. %s" % (url, example)
    return None


def normalize_url(url, default_path):
    """'host:port' -> 'http://host:port<default_path>'; a URL with a path is kept as it is."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/") and not parts.query:
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, default_path, "", ""))
    return url


def sibling_url(url, path, query=""):
    """The URL of another path on the same endpoint (top reads /errors beside /metrics)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))
