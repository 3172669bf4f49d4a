"""Real, unmodified programs (nginx, curl, redis-server, a Go program) and loopback peers that reset them.

Each program runs with its own configuration in a test's temporary directory, on loopback ports chosen at
run time, and is always stopped. What a program says about its own errors (nginx's error.log, curl's exit
status and message, redis-server's log, the Go program's error strings) is the ground truth the tests
compare errnomon with; the parsers here turn those accounts into {(op, errno, port): count}.
"""

import errno as errno_mod
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

from .conftest import free_port

LOOPBACK = "127.0.0.1"
DEADLINE = 20.0  # bound of every wait here


def need(program):
    """The path of a program the tests run; fails (never skips) when setup did not install it."""
    path = shutil.which(program)
    assert path, "%s is not installed: run 'scripts/setup.sh --test'" % program
    return path


def errno_name(number):
    return errno_mod.errorcode.get(int(number), "E%s" % number)


def linger0_close(conn):
    """Close with SO_LINGER {1, 0}: the kernel sends an RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def wait_listening(port, proc=None, what="server"):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited with %s before listening on %d" % (what, proc.returncode, port))
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("%s did not listen on %d within %.0f s" % (what, port, DEADLINE))


def stop(proc, sig=signal.SIGTERM):
    """Stop a program started in its own session (start_new_session): `sig` to it, then, if it has not
    exited in time, SIGKILL to its whole process group, so no worker it forked outlives the test."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def dead_port():
    """A loopback port nobody listens on (bound once, then released)."""
    return free_port()


class Service:
    """A program run as a server with its own configuration in a test directory, on a free loopback port;
    a context manager that starts it, waits until it listens, and always stops it."""

    stop_signal = signal.SIGTERM

    def __init__(self, program, directory, log_path):
        self.binary = need(program)
        self.name = program
        self.dir = directory
        self.port = free_port()
        self.log_path = log_path
        self.proc = None

    def argv(self):
        raise NotImplementedError

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_listening(self.port, self.proc, self.name)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            stop(self.proc, self.stop_signal)

    def log(self):
        with open(self.log_path) as f:
            return f.read()


class ThreadServer:
    """Accepts `count` connections on `listener` in a thread of the test process and hands each to handle();
    `handled` counts those it finished."""

    def __init__(self, listener, count):
        self.listener = listener
        self.listener.settimeout(DEADLINE)
        self.count = count
        self.handled = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def handle(self, conn):
        raise NotImplementedError

    def _serve(self):
        try:
            for _ in range(self.count):
                conn, _ = self.listener.accept()
                conn.settimeout(DEADLINE)
                self.handle(conn)
                self.handled += 1
        except OSError:
            pass
        finally:
            self.listener.close()

    def join(self):
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "%s still waiting for connections" % type(self).__name__


class ResettingServer(ThreadServer):
    """Accepts `count` connections; on each reads the request (up to a blank line, bounded), optionally sends
    `reply`, then resets the connection (linger-0 close). Runs in a thread of the test process."""

    def __init__(self, count, reply=b"", pause=0.05):
        self.reply = reply
        self.pause = pause
        listener = socket.socket()
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        super().__init__(listener, count)

    @property
    def resets(self):
        return self.handled

    def handle(self, conn):
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if self.reply:
            conn.sendall(self.reply)
            time.sleep(self.pause)  # let the program read the reply before the RST
        linger0_close(conn)


def reset_mid_download(port, path, read_bytes, count, idle=0.0):
    """`count` HTTP clients that ask for `path`, read `read_bytes` of the answer, then reset the connection:
    at once, while the server is still sending (idle=0), or after `idle` seconds, when the server is waiting
    for room in a full send buffer. Returns how many bytes each had read."""
    got = []
    for _ in range(count):
        c = socket.create_connection((LOOPBACK, port), timeout=DEADLINE)
        c.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode())
        n = 0
        while n < read_bytes:
            chunk = c.recv(min(65536, read_bytes - n))
            if not chunk:
                break
            n += len(chunk)
        got.append(n)
        time.sleep(idle)
        linger0_close(c)
        time.sleep(0.2)  # one reset at a time: each lands in its own call
    return got


# ---- nginx -----------------------------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 0;
    server {{
        listen {host}:{port};
        root {dir}/www;
        sendfile {sendfile};
        sendfile_max_chunk 0;
        tcp_nopush off;
{locations}
    }}
}}
"""

# "<syscall>() failed (<errno>: <text>)": nginx's own account of every failed socket call
NGINX_FAILED = re.compile(r"\b(\w+)\(\) failed \((\d+): [^)]*\)")
NGINX_OPS = {"recv": "recv", "readv": "recv", "read": "recv", "send": "send", "writev": "send",
             "sendfile": "send", "write": "send", "sendmsg": "send", "connect": "connect"}
NGINX_UPSTREAM = re.compile(r'upstream: "\w+://[^:/]+:(\d+)')


class Nginx(Service):
    """nginx with its own configuration and error.log in `directory`."""

    stop_signal = signal.SIGQUIT  # graceful: workers finish, the master removes its pid file

    def __init__(self, directory, sendfile=True, locations=""):
        super().__init__("nginx", directory, os.path.join(directory, "error.log"))
        self.www = os.path.join(directory, "www")
        os.makedirs(self.www, exist_ok=True)
        self.conf = os.path.join(directory, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(dir=directory, host=LOOPBACK, port=self.port,
                                      sendfile="on" if sendfile else "off", locations=locations))

    def argv(self):
        # -e: the log of start-up errors too is ours, not /var/log/nginx's
        return [self.binary, "-p", self.dir, "-c", self.conf, "-e", self.log_path]

    def failures(self):
        """{(op, errno, port): count} from error.log; port is the upstream's for upstream lines, else ours."""
        out = {}
        for line in self.log().splitlines():
            m = NGINX_FAILED.search(line)
            if not m:
                continue
            up = NGINX_UPSTREAM.search(line)
            port = int(up.group(1)) if up else self.port
            key = (NGINX_OPS[m.group(1)], errno_name(m.group(2)), port)
            out[key] = out.get(key, 0) + 1
        return out


def http_get(port, path, timeout=DEADLINE):
    """One GET through a plain socket; returns (status line, bytes of the whole answer)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as c:
        c.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace"), len(data)


# ---- curl ------------------------------------------------------------------------------------------------

def curl(url):
    """Run curl once: (exit status, its stderr)."""
    r = subprocess.run([need("curl"), "-sS", "-v", "-o", "/dev/null", "--max-time", "10", url],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=DEADLINE)
    return r.returncode, r.stderr


# ---- redis-server -----------------------------------------------------------------------------------------

class Redis(Service):
    """redis-server without persistence, its verbose log in `directory`."""

    def __init__(self, directory):
        super().__init__("redis-server", directory, os.path.join(directory, "redis.log"))

    def argv(self):
        return [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", self.dir, "--logfile", self.log_path, "--loglevel", "verbose",
                "--protected-mode", "no"]

    def command(self, *args, conn=None):
        """Send one command in RESP; returns the socket (left open) so the caller decides how it ends."""
        c = conn or socket.create_connection((LOOPBACK, self.port), timeout=DEADLINE)
        msg = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            msg += b"$%d\r\n%s\r\n" % (len(a), a)
        c.sendall(msg)
        return c

    def info(self, section="stats"):
        c = self.command("INFO", section)
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
            data += c.recv(65536)
        c.close()
        return dict(line.split(":", 1) for line in data.decode().splitlines()[1:] if ":" in line)


# ---- a Go program -----------------------------------------------------------------------------------------

GO_SOURCE = r"""
// Dial, write, read: every error as Go reports it, one line each. Go connects non-blocking.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			fmt.Println("ERR", err)
			continue
		}
		if os.Args[1] == "read" {
			c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err = c.Read(buf); err != nil {
					break
				}
			}
			fmt.Println("ERR", err)
		}
		c.Close()
	}
}
"""


def build_go(directory, name):
    """Build the Go program as `name` (its comm) in `directory`; the build cache stays there too."""
    go = need("go")
    src = os.path.join(directory, "main.go")
    with open(src, "w") as f:
        f.write(GO_SOURCE)
    binary = os.path.join(directory, name)
    env = dict(os.environ, GOCACHE=os.path.join(directory, "gocache"), GOPATH=os.path.join(directory, "gopath"),
               GOFLAGS="-mod=mod", GO111MODULE="off", CGO_ENABLED="0")
    r = subprocess.run([go, "build", "-o", binary, src], cwd=directory, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, "go build failed:\n%s" % r.stderr
    return binary


def run_go(binary, mode, port, count):
    """Run the Go program; returns its error lines."""
    r = subprocess.run([binary, mode, "%s:%d" % (LOOPBACK, port), str(count)], capture_output=True, text=True,
                       timeout=DEADLINE * 3)
    assert r.returncode == 0, r.stderr
    return [line[4:] for line in r.stdout.splitlines() if line.startswith("ERR ")]
