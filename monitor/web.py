"""HTTP: the telemetry path (streamed, monitor/exposition.py), a landing page at /, served by waitress.

The server must survive idle, slow and many clients. waitress does that with what it already has: one
event loop owns every connection (an idle or slow client costs a file descriptor, never a thread), a
fixed pool of worker threads runs only complete requests, connections that make no progress for
IDLE_TIMEOUT are closed, at most max_connections are open at once (the rest wait in the listen queue),
and the listen backlog is BACKLOG. A scrape's body leaves as it is written, without a Content-Length
(chunked in HTTP/1.1); past 1 MiB waitress spools what the client has not read yet to a temporary file,
not to memory.
"""

import logging
import resource
import socket
import threading
from urllib.parse import parse_qs

from waitress import wasyncore
from waitress.server import create_server

from . import exposition

log = logging.getLogger("errnomon.web")
# waitress warns on every request that waits for a worker: under many scrapers that is noise, not news
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

BACKLOG = 1024          # pending connections the kernel queues (capped by net.core.somaxconn)
IDLE_TIMEOUT = 10       # seconds a connection may sit without a byte in either direction
LOOP_TIMEOUT = 5        # the event loop's longest sleep: idle connections are closed after IDLE_TIMEOUT plus
                        # at most this; an idle daemon's HTTP thread wakes this often
THREADS = 4             # workers building responses; requests queue for them, connections do not
MAX_CONNECTIONS = 4096  # open at once, at most; fewer when the file descriptor limit is lower
RESERVED_FDS = 256      # kept for the BPF maps and links, logs, the config file
# prometheus-client gzips at level 9, which took a third of a gzipped 10,000-series scrape for a body only a
# quarter smaller than level 1's (docs/BENCHMARKS.md, Scrape): a scrape's CPU is the monitored host's, its bytes
# are few either way.
GZIP_LEVEL = 1

LANDING = """<!doctype html>
<html><head><title>errnomon</title></head>
<body><h1>errnomon</h1>
<p>Live errno monitor: socket errors per process, peer and service port, from eBPF tracepoints.</p>
<p><a href="{path}">Metrics</a></p>
</body></html>
"""

# Sample names a metric family may show, by suffix (a counter "x" is sampled as x_total and x_created).
_SUFFIXES = ("", "_total", "_created", "_count", "_sum", "_bucket", "_info", "_gcount", "_gsum")


class ListenError(Exception):
    pass


def parse_listen_address(text):
    """':9779', '0.0.0.0:9779', '127.0.0.1:9779', '[::1]:9779' -> (host, port). '' host means all addresses."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ListenError("--web.listen-address %r is not host:port: use e.g. :9779 or 127.0.0.1:9779" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def check_telemetry_path(path):
    """None if `path` can be served, else what is wrong with it and what to do (one line)."""
    if not path.startswith("/") or path == "/":
        return "--web.telemetry-path %r must start with / and not be / itself, e.g. /metrics" % path
    bad = [c for c in path if c in "?#%" or c.isspace() or not c.isprintable()]
    if bad:
        return ("--web.telemetry-path %r contains %r: the path cannot hold ?, #, %%, spaces or control "
                "characters (a query or fragment is never part of the path): use e.g. /metrics" % (path, bad[0]))
    return None


def raise_file_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's soft default, 1024, is too few for
    many scrapers); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open file limit from %d to %d (%s): at most %d scrape connections",
                        soft, hard, e, max(1, soft - RESERVED_FDS))
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def max_connections(file_limit):
    return max(16, min(MAX_CONNECTIONS, file_limit - RESERVED_FDS))


def _known_names(registry):
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES)
        names.update(s.name for s in family.samples)
    return names


def _gzip_accepted(header):
    return any(e.split(";")[0].strip().lower() == "gzip" for e in (header or "").split(","))


def _metrics_app(registry):
    """GET (and OPTIONS) of the telemetry path: the body streamed (monitor/exposition.py), in the format
    the Accept header asks for, gzipped at GZIP_LEVEL when the client accepts gzip."""
    def app(environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET,HEAD"), ("Content-Length", "0")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET,HEAD"),
                                                      ("Content-Type", "text/plain; charset=utf-8")])
            return [("%s is not answered here: use GET or HEAD\n" % ascii(method)).encode()]
        params = parse_qs(environ.get("QUERY_STRING", ""))
        source = registry.restricted_registry(params["name[]"]) if "name[]" in params else registry
        gzipped = _gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING"))
        content_type, body = exposition.content(source, environ.get("HTTP_ACCEPT"),
                                                GZIP_LEVEL if gzipped else None)
        start_response("200 OK", [("Content-Type", content_type)]
                       + ([("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")] if gzipped else []))
        return body
    return app


def _head_as_get(app):
    """HEAD answered as GET without the body (RFC 9110, 9.3.2): the same status and headers, Content-Length
    that of the body a GET gets. prometheus-client answers HEAD 405 with a body, and a body after a HEAD
    response is read as the start of the next response on a kept-alive connection."""
    def wrapped(environ, start_response):
        if environ.get("REQUEST_METHOD") != "HEAD":
            return app(environ, start_response)
        answer = []
        length = sum(len(piece) for piece in app(  # counted as it streams, not held
            dict(environ, REQUEST_METHOD="GET"), lambda status, headers, exc_info=None: answer.append((status, headers))))
        status, headers = answer[-1]
        start_response(status, [(k, v) for k, v in headers if k.lower() != "content-length"]
                       + [("Content-Length", str(length))])
        return [b""]
    return wrapped


def _app(registry, path):
    """The telemetry path, '/' and 404 for the rest.

    ?name[]=x asks prometheus-client for only the metrics named x (Prometheus' `params:`). A name errnomon
    does not export is answered 400, not with an empty body: an empty 200 would look to Prometheus like
    every series had gone, a 400 shows as a failed scrape (up == 0) that says why.
    """
    metrics_app = _metrics_app(registry)
    landing = LANDING.format(path=path).encode()

    @_head_as_get
    def app(environ, start_response):
        route = environ.get("PATH_INFO", "/")
        if route == path:
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
            if names:
                unknown = sorted(set(names) - _known_names(registry))
                if unknown:
                    start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8")])
                    return [("unknown metric name in name[]: %s: ask for metrics errnomon exports, e.g. "
                             "name[]=errnomon_socket_errors_total, or leave name[] out\n"
                             % ascii(unknown[0])).encode()]
            return metrics_app(environ, start_response)
        if route == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: metrics are at " + path.encode() + b"\n"]
    return app


class Server:
    """A bound, listening waitress server; start() serves from a thread, shutdown() stops it."""

    def __init__(self, sock, app, connections):
        self.connections = connections
        self.waitress = create_server(
            app, map={}, sockets=[sock], threads=THREADS, backlog=BACKLOG, connection_limit=connections,
            channel_timeout=IDLE_TIMEOUT, cleanup_interval=1, asyncore_loop_timeout=LOOP_TIMEOUT,
            asyncore_use_poll=True,  # select() cannot watch more than 1024 descriptors
            ident="errnomon", expose_tracebacks=False, max_request_header_size=16384,
            max_request_body_size=65536, url_scheme="http")
        self.socket = sock
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.waitress.run, name="http", daemon=True)
        self.thread.start()
        return self

    def shutdown(self, timeout=5.0):
        """Close the listening socket and every connection (in the loop's own thread), stop the workers."""
        server = self.waitress
        try:
            if self.thread is not None and self.thread.is_alive():
                server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
                self.thread.join(timeout)
            else:
                wasyncore.close_all(server._map)
        except OSError:  # the loop's wake-up pipe is already gone (seen once in CI): close from here
            wasyncore.close_all(server._map, ignore_all=True)
        server.task_dispatcher.shutdown(timeout=timeout)

    def server_close(self):
        self.socket.close()


def bind(listen_address, path, registry, file_limit=None):
    """Bind and listen (so a bad or busy address fails before anything else); start() serves."""
    host, port = parse_listen_address(listen_address)
    family = socket.AF_INET6 if ":" in host or not host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host or "::", port))
    except OSError as e:
        sock.close()
        if family == socket.AF_INET6 and not host and e.errno in (97, 99):  # no IPv6: all IPv4 addresses
            return bind("0.0.0.0:%d" % port, path, registry, file_limit)
        raise ListenError("cannot listen on %s: %s: pick a free address with --web.listen-address"
                          % (listen_address, e.strerror or e))
    if file_limit is None:
        file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return Server(sock, _app(registry, path), max_connections(file_limit))


def start(httpd):
    return httpd.start()


def serve(listen_address, path, registry):
    """Bind and serve in a daemon thread; returns the server (shutdown() stops it)."""
    return start(bind(listen_address, path, registry))
