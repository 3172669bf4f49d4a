"""HTTP: prometheus-client's WSGI app for the telemetry path, a landing page at /."""

import logging
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger("errnomon.web")

LANDING = """<!doctype html>
<html><head><title>errnomon</title></head>
<body><h1>errnomon</h1>
<p>Live errno monitor: socket errors per process, peer and service port, from eBPF tracepoints.</p>
<p><a href="{path}">Metrics</a></p>
</body></html>
"""


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


class _Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        log.debug("http %s", fmt % args)


def _app(metrics_app, path):
    landing = LANDING.format(path=path).encode()

    def app(environ, start_response):
        route = environ.get("PATH_INFO", "/")
        if route == path:
            return metrics_app(environ, start_response)
        if route == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: metrics are at " + path.encode() + b"\n"]
    return app


def bind(listen_address, path, registry):
    """Bind the listening socket (so a bad or busy address fails before anything else); start() serves."""
    host, port = parse_listen_address(listen_address)
    family = socket.AF_INET6 if ":" in host or not host else socket.AF_INET

    class Server(ThreadingWSGIServer):
        address_family = family

        def server_bind(self):
            if family == socket.AF_INET6 and not host:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    try:
        httpd = make_server(host or "::", port, _app(make_wsgi_app(registry), path), Server, handler_class=_Handler)
    except OSError as e:
        if family == socket.AF_INET6 and not host and e.errno in (97, 99):  # no IPv6: all IPv4 addresses
            return bind("0.0.0.0:%d" % port, path, registry)
        raise ListenError("cannot listen on %s: %s: pick a free address with --web.listen-address"
                          % (listen_address, e.strerror or e))
    return httpd


def start(httpd):
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    return httpd


def serve(listen_address, path, registry):
    """Bind and serve in a daemon thread; returns the server (shutdown() stops it)."""
    return start(bind(listen_address, path, registry))
