"""HTTP: the telemetry path (streamed, monitor/exposition.py), a landing page at /, served by waitress; with
--web.config.file, TLS in front of it (TLSServer) and basic auth, headers and a rate limit around the app
(monitor/webconfig.py).

The server must survive idle, slow and many clients. waitress does that with what it already has: one
event loop owns every connection (an idle or slow client costs a file descriptor, never a thread), a
fixed pool of worker threads runs only complete requests, connections that make no progress for
IDLE_TIMEOUT are closed, at most max_connections are open at once (the rest wait in the listen queue),
and the listen backlog is BACKLOG. A scrape's body leaves as it is written, without a Content-Length
(chunked in HTTP/1.1); past 1 MiB waitress spools what the client has not read yet to a temporary file,
not to memory.
"""

import asyncio
import logging
import resource
import socket
import ssl
import threading
from urllib.parse import parse_qs

from waitress import wasyncore
from waitress.server import create_server

from . import exposition, webconfig

log = logging.getLogger("errnomon.web")
# waitress warns on every request that waits for a worker: under many scrapers that is noise, not news
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

BACKLOG = 1024          # pending connections the kernel queues (capped by net.core.somaxconn)
IDLE_TIMEOUT = 10       # seconds a connection may sit without a byte in either direction
LOOP_TIMEOUT = 5        # the event loop's longest sleep: idle connections are closed after IDLE_TIMEOUT plus
                        # at most this; an idle daemon's HTTP thread wakes this often
THREADS = 4             # workers building responses; requests queue for them, connections do not
MAX_CONNECTIONS = 4096  # open at once, at most; fewer when the file descriptor limit is lower
HANDSHAKE_TIMEOUT = 10  # seconds a TLS client has from its connect to a finished handshake
FDS_PER_TLS = 3         # a TLS connection: its socket, and the socketpair to waitress
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


def _app(registry, path, routes=None):
    """The telemetry path, '/', the paths of `routes` ({path: WSGI app}, e.g. /errors) and 404 for the rest.

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
        if routes and route in routes:
            return routes[route](environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: metrics are at " + path.encode() + b"\n"]
    return app


class Server:
    """A bound, listening waitress server; start() serves from a thread, shutdown() stops it."""

    scheme = "http"

    def __init__(self, sock, app, connections):
        self.connections = connections
        self.waitress = self._waitress(app, sock, connections, _start=True)
        self.socket = sock
        self.thread = None

    def _waitress(self, app, sock, connections, _start):
        return create_server(
            app, map={}, sockets=[sock], threads=THREADS, backlog=BACKLOG, connection_limit=connections,
            channel_timeout=IDLE_TIMEOUT, cleanup_interval=1, asyncore_loop_timeout=LOOP_TIMEOUT,
            asyncore_use_poll=True,  # select() cannot watch more than 1024 descriptors
            ident="errnomon", expose_tracebacks=False, max_request_header_size=16384,
            max_request_body_size=65536, url_scheme=self.scheme, _start=_start)

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


class TLSServer(Server):
    """TLS in front of waitress, which still parses HTTP, runs the workers and times out idle connections.

    waitress has no TLS. One asyncio loop in its own thread ("https") owns the listening socket, accepts
    at most `connections` at once (the rest wait in the listen queue, as with waitress), and gives each
    client HANDSHAKE_TIMEOUT for its handshake: a stalled or slow handshake costs a file descriptor and
    holds up nothing else. After the handshake, a socketpair joins the client to a waitress channel made in
    waitress's own loop thread, as its handle_accept would make it, and the loop copies bytes both ways with
    flow control (a side that does not keep up pauses reading from the other). waitress's listening
    socket never listens: the TLS port is the only way in. A client that stops reading while its TLS
    buffer is full, or does not take its last bytes after waitress closed, is dropped after IDLE_TIMEOUT.
    The certificate, key and CA are re-read on change (webconfig.Watcher) for the next handshake.
    """

    scheme = "https"

    def __init__(self, sock, app, connections, watcher):
        self.connections = max(1, connections // FDS_PER_TLS)
        idle = socket.socket(sock.family, socket.SOCK_STREAM)  # never bound, never listening: no way in
        self.waitress = self._waitress(app, idle, self.connections, _start=False)
        self.socket = sock
        self.watcher = watcher
        self.thread = None
        self.loop = None
        self.links = set()
        self.ready = threading.Event()

    def start(self):
        self.socket.listen(BACKLOG)
        self.socket.setblocking(False)
        super().start()
        self.tls_thread = threading.Thread(target=self._run, name="https", daemon=True)
        self.tls_thread.start()
        self.ready.wait(10)
        return self

    def _run(self):
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's: Python 3.9's asyncio looks it up
        loop.set_exception_handler(_log_loop_error)
        self.accepting = loop.create_task(self._accept())
        self.ready.set()
        try:
            loop.run_forever()
            # shutdown() aborted every link: let their connection_lost callbacks run, end what still waits
            loop.run_until_complete(asyncio.sleep(0.05))
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _accept(self):
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.connections)
        while True:
            await slots.acquire()
            try:
                sock, addr = await loop.sock_accept(self.socket)
            except OSError as e:  # EMFILE and the like: say so, let descriptors free up
                slots.release()
                log.warning("TLS accept failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            _Link(self, sock, addr, slots.release).start(loop)

    def hand_over(self, sock, addr):
        """A waitress channel on `sock`, created in waitress's loop thread."""
        server = self.waitress

        def make():
            server.channel_class(server, sock, addr, server.adj, map=server._map)
        server.trigger.pull_trigger(make)

    def shutdown(self, timeout=5.0):
        loop = self.loop
        if loop is not None and not loop.is_closed():
            def stop():
                self.accepting.cancel()
                for link in list(self.links):
                    link.abort()
                loop.call_soon(loop.stop)
            try:
                loop.call_soon_threadsafe(stop)
                self.tls_thread.join(timeout)
            except RuntimeError:  # the loop closed meanwhile
                pass
        super().shutdown(timeout)


def _log_loop_error(loop, context):
    """asyncio's default handler logs a traceback; a client's misdeed is one line."""
    exc = context.get("exception")
    log.debug("TLS connection: %s%s", context.get("message"), ": %s" % exc if exc else "")


# What a client sent instead of a TLS handshake: an HTTP request (exporter-toolkit answers the same)
PLAIN_HTTP_ANSWER = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close"
                     b"\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")


class _Half(asyncio.Protocol):
    """One side of a link (the client's TLS connection, or waitress's end of the socketpair): what it
    receives is written to the other side; when its writes back up, the other side stops reading."""

    def __init__(self, link):
        self.link = link
        self.transport = None
        self.other = None
        self.early = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        other = self.other.transport if self.other is not None else None
        if other is None:  # the other side is still being set up
            self.early.append(data)
            self.transport.pause_reading()
            return
        other.write(data)

    def attach(self, other):
        self.other = other
        early, self.early = self.early, []
        for data in early:
            other.transport.write(data)
        if self.transport is not None and early:
            self.transport.resume_reading()

    def eof_received(self):
        self.link.close()
        return False

    def pause_writing(self):
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()
        self.link.stalled(self, True)

    def resume_writing(self):
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()
        self.link.stalled(self, False)

    def connection_lost(self, exc):
        self.transport = None
        self.link.lost(self)


class _Link:
    """One TLS client, from accept to close: its first byte, the handshake, the allowed SANs, then the
    socketpair to waitress and the bytes between them."""

    def __init__(self, server, sock, addr, release):
        self.server, self.sock, self.addr, self.release = server, sock, addr, release
        self.client = None
        self.pair = None
        self.closing = False
        self.timer = None
        self.finished = False

    def start(self, loop):
        self.loop = loop
        self.server.links.add(self)
        loop.create_task(self._open())

    async def _open(self):
        loop = self.loop
        deadline = loop.time() + HANDSHAKE_TIMEOUT
        try:
            if not await self._starts_tls(deadline):
                return self._done()
            config = self.server.watcher.current()
            self.client = _Half(self)
            await loop.connect_accepted_socket(
                lambda: self.client, self.sock, ssl=config.tls.context,
                ssl_handshake_timeout=max(0.1, deadline - loop.time()))
            if config.tls.allowed_sans is not None:
                peer = self.client.transport.get_extra_info("peercert")
                if not webconfig.allowed_san(peer, config.tls.allowed_sans):
                    log.debug("TLS client %s: no allowed SAN in its certificate: closed", self.addr[0])
                    return self.abort()
            if self.closing:
                return None
            ours, theirs = socket.socketpair()
            self.server.hand_over(theirs, self.addr)
            self.pair = _Half(self)
            await loop.connect_accepted_socket(lambda: self.pair, ours)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            log.debug("TLS client %s: %s", self.addr[0], e or type(e).__name__)
            return self.abort()
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as e:  # noqa: BLE001 - whatever it is, the link ends and its place is given back
            log.warning("TLS client %s: %s: %s", self.addr[0], type(e).__name__, e)
            return self.abort()
        if self.closing:
            return self.abort()
        self.client.attach(self.pair)
        self.pair.attach(self.client)
        return None

    async def _starts_tls(self, deadline):
        """Wait for the client's first byte: a TLS handshake goes on; an HTTP request is answered 400."""
        loop = self.loop
        readable = loop.create_future()
        fd = self.sock.fileno()
        loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, max(0.1, deadline - loop.time()))
        except asyncio.TimeoutError:
            log.debug("TLS client %s sent nothing in %ds: closed", self.addr[0], HANDSHAKE_TIMEOUT)
            return False
        finally:
            loop.remove_reader(fd)
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return False
        if first == b"\x16":  # a TLS handshake record
            return True
        if first.isalpha():
            try:
                self.sock.recv(65536)  # what was sent: a close with unread bytes would reset the answer away
                self.sock.send(PLAIN_HTTP_ANSWER)
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return False

    def stalled(self, half, paused):
        """The client does not read what waitress sends: dropped if that lasts IDLE_TIMEOUT."""
        if half is not self.client or self.closing:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if paused:
            self.timer = self.loop.call_later(IDLE_TIMEOUT, self.abort)

    def close(self):
        """Flush both sides and close; whatever is not flushed in IDLE_TIMEOUT is dropped."""
        if self.closing:
            return
        self.closing = True
        for half in (self.client, self.pair):
            if half is not None and half.transport is not None:
                half.transport.close()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(IDLE_TIMEOUT, self.abort)
        self._check()

    def abort(self):
        self.closing = True
        for half in (self.client, self.pair):
            if half is not None and half.transport is not None:
                half.transport.abort()
        self._check()

    def lost(self, half):
        self.close()
        self._check()

    def _check(self):
        if all(h is None or h.transport is None for h in (self.client, self.pair)):
            self._done()

    def _done(self):
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.client is None or self.client.transport is None:
            try:
                self.sock.close()  # a transport closes its own socket; before one there is only ours
            except OSError:
                pass
        self.server.links.discard(self)
        self.release()


def bind(listen_address, path, registry, file_limit=None, watcher=None, routes=None):
    """Bind and listen (so a bad or busy address fails before anything else); start() serves. `watcher`
    (webconfig.Watcher): the web config's TLS, basic auth, headers and rate limit. A TLS port listens from
    start() on: before that, connects are refused."""
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
            return bind("0.0.0.0:%d" % port, path, registry, file_limit, watcher, routes)
        raise ListenError("cannot listen on %s: %s: pick a free address with --web.listen-address"
                          % (listen_address, e.strerror or e))
    if file_limit is None:
        file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    app = _app(registry, path, routes)
    if watcher is None:
        return Server(sock, app, max_connections(file_limit))
    app = webconfig.Guard(app, watcher)
    if watcher.current().tls is None:
        return Server(sock, app, max_connections(file_limit))
    return TLSServer(sock, app, max_connections(file_limit), watcher)


def start(httpd):
    return httpd.start()


def serve(listen_address, path, registry, watcher=None):
    """Bind and serve in a daemon thread; returns the server (shutdown() stops it)."""
    return start(bind(listen_address, path, registry, watcher=watcher))
