"""Real, unmodified programs against loopback peers that reset them: errnomon must count exactly what each
program itself reports (nginx's error.log, curl's exit status and message, redis-server's log, the error
strings of a Go program, the exceptions os.sendfile raised), with every label.

Every errnomon daemon counts the whole host, and these programs have fixed comms ("nginx", "curl",
"redis-server"), so the series are matched on the comm and on the ports each test chose at run time.
"""

import os
import re
import socket
import threading
import time

import pytest

from . import real_programs as rp
from . import scenarios

pytestmark = pytest.mark.bpf

REMOTE = rp.LOOPBACK
STRERROR = {os.strerror(n): rp.errno_name(n) for n in range(1, 134)}


def expect_errors(daemon, comm, failures, ports):
    """failures: {(op, errno, port): count}; errnomon's socket_errors for comm on each of `ports` must be
    exactly these."""
    print("%s's own account: %s" % (comm, failures or "no failed call"))  # shown with pytest -s
    for port in ports:
        series = [(dict(comm=comm, remote=REMOTE, port=str(port), op=op, errno=errno), n)
                  for (op, errno, p), n in sorted(failures.items()) if p == port]
        daemon.wait_for("errnomon_socket_errors_total", series, comm=comm, port=str(port))


def expect_connect_failures(daemon, comm, port, errno, count):
    """A failed connection attempt is a connect failure, blocking or not, and not an error report of an
    established connection."""
    peer = dict(comm=comm, remote=REMOTE, port=str(port))
    daemon.wait_for("errnomon_connect_failures_total", [(dict(peer, errno=errno), count)], comm=comm,
                    port=str(port))
    daemon.wait_for("errnomon_socket_error_reports_total", [], comm=comm, port=str(port))
    daemon.wait_for("errnomon_tcp_resets_received_total", [(dict(peer, state="SYN_SENT"), count)], comm=comm,
                    port=str(port))


def expect_resets_received(daemon, comm, port, count, state="ESTABLISHED"):
    daemon.wait_for("errnomon_tcp_resets_received_total",
                    [(dict(comm=comm, remote=REMOTE, port=str(port), state=state), count)], comm=comm,
                    port=str(port))


# ---- nginx ------------------------------------------------------------------------------------------------

def test_nginx_proxy_to_upstream_that_resets_mid_response(daemon, tmp_path):
    n = 3
    # the upstream answers with a header and part of the body it announced, then resets
    upstream = rp.ResettingServer(n, reply=b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    location = "        location / { proxy_pass http://%s:%d; }\n" % (REMOTE, upstream.port)
    with rp.Nginx(str(tmp_path), locations=location) as nginx:
        for _ in range(n):
            rp.http_get(nginx.port, "/")
        upstream.join()
        time.sleep(0.3)  # the worker writes its log line after the failed read
        failures = nginx.failures()
    assert upstream.resets == n
    # e.g. readv() failed (104: Connection reset by peer) while reading upstream
    assert failures == {("recv", "ECONNRESET", upstream.port): n}, nginx.log()
    expect_errors(daemon, "nginx", failures, [upstream.port, nginx.port])
    expect_resets_received(daemon, "nginx", upstream.port, n)


def test_nginx_proxy_to_dead_port(daemon, tmp_path):
    n = 3
    dead = rp.dead_port()
    location = "        location / { proxy_pass http://%s:%d; }\n" % (REMOTE, dead)
    with rp.Nginx(str(tmp_path), locations=location) as nginx:
        statuses = [rp.http_get(nginx.port, "/")[0] for _ in range(n)]
        time.sleep(0.3)
        failures = nginx.failures()
    assert statuses == ["HTTP/1.1 502 Bad Gateway"] * n
    # connect() failed (111: Connection refused) while connecting to upstream: nginx connects non-blocking,
    # so no connect() system call fails; the refusal reaches it through SO_ERROR
    assert failures == {("connect", "ECONNREFUSED", dead): n}, nginx.log()
    expect_errors(daemon, "nginx", {}, [dead, nginx.port])
    expect_connect_failures(daemon, "nginx", dead, "ECONNREFUSED", n)


NGINX_SEND_FAILURES_WANTED = 3
NGINX_CLIENTS_MAX = 120  # bounded; the reset landed inside a call for 2 of 40 clients once, with two guests running


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile_on", "sendfile_off"])
def test_nginx_large_file_to_clients_that_reset(daemon, tmp_path, sendfile):
    """Clients download a large file and reset while nginx is still sending it. Where the reset lands is
    timing: inside sendfile()/writev() (nginx logs "sendfile() failed (32: Broken pipe)" and the like) or
    between calls (nginx reads the error with SO_ERROR: "client prematurely closed connection", no call
    failed). Clients are added until nginx has logged a few failed sends, and errnomon must have counted
    exactly the failed calls nginx logged, by errno."""
    syscall = "sendfile" if sendfile else "writev"
    buf = bytearray(8 << 20)
    with rp.Nginx(str(tmp_path), sendfile=sendfile) as nginx:
        with open(os.path.join(nginx.www, "big.bin"), "wb") as f:
            f.write(os.urandom(64 << 20))
        clients = 0
        while clients < NGINX_CLIENTS_MAX and \
                len(re.findall(r"\b%s\(\) failed" % syscall, nginx.log())) < NGINX_SEND_FAILURES_WANTED:
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            c.settimeout(rp.DEADLINE)
            c.connect((REMOTE, nginx.port))
            c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            got = 0
            while got < (8 << 20):  # read fast, so nginx is busy sending when the reset arrives
                got += c.recv_into(buf)
            rp.linger0_close(c)
            clients += 1
            time.sleep(0.15)
        time.sleep(0.3)
        failures = nginx.failures()
        log = nginx.log()
    sends = sum(n for (op, _, _), n in failures.items() if op == "send")
    assert len(re.findall(r"\b%s\(\) failed" % syscall, log)) >= NGINX_SEND_FAILURES_WANTED, \
        "nginx never failed in %s() in %d clients:\n%s" % (syscall, clients, log)
    assert set(port for _, _, port in failures) == {nginx.port}, log
    assert sends >= NGINX_SEND_FAILURES_WANTED
    expect_errors(daemon, "nginx", failures, [nginx.port])


# ---- os.sendfile ------------------------------------------------------------------------------------------

def test_os_sendfile_to_peer_that_resets_mid_transfer(daemon, tmp_path):
    """A blocking os.sendfile() of a large file; the peer reads a little and resets while the call waits for
    room. The call returns the bytes it sent (its last chunk failed with ECONNRESET inside the kernel); the
    next calls raise EPIPE. errnomon counts what the calls returned: EPIPE twice, no ECONNRESET."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(16 << 20))
    comm = scenarios.make_comm("sendf", "cli")
    listener = socket.socket()
    listener.bind((REMOTE, 0))
    listener.listen()
    port = listener.getsockname()[1]

    def peer():
        conn, _ = listener.accept()
        conn.recv(65536)
        time.sleep(0.3)  # the sender is now blocked in sendfile on a full send buffer
        rp.linger0_close(conn)

    t = threading.Thread(target=peer, daemon=True)
    t.start()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            scenarios._set_comm(comm)
            s = socket.create_connection((REMOTE, port))
            fd = os.open(str(path), os.O_RDONLY)
            results, offset = [], 0
            for _ in range(3):
                try:
                    n = os.sendfile(s.fileno(), fd, offset, 16 << 20)
                    offset += n
                    results.append(str(n))
                except OSError as e:
                    results.append(rp.errno_name(e.errno))
            os.write(w, " ".join(results).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    results = os.read(r, 4096).decode().split()
    os.close(r)
    t.join(rp.DEADLINE)
    listener.close()
    assert status == 0
    # the first call returned a part of the file, the two others EPIPE
    assert len(results) == 3 and results[0].isdigit() and 0 < int(results[0]) < (16 << 20), results
    assert results[1:] == ["EPIPE", "EPIPE"], results
    expect_errors(daemon, comm, {("send", "EPIPE", port): 2}, [port])


# ---- curl -------------------------------------------------------------------------------------------------

def test_curl_to_server_that_resets(daemon):
    n = 3
    server = rp.ResettingServer(n)
    statuses = [rp.curl("http://%s:%d/" % (REMOTE, server.port)) for _ in range(n)]
    server.join()
    # curl: (56) Recv failure: Connection reset by peer
    assert [code for code, _ in statuses] == [56] * n, statuses
    assert all("Recv failure: Connection reset by peer" in err for _, err in statuses), statuses
    expect_errors(daemon, "curl", {("recv", "ECONNRESET", server.port): n}, [server.port])
    expect_resets_received(daemon, "curl", server.port, n)


def test_curl_to_refused_port(daemon):
    n = 3
    dead = rp.dead_port()
    statuses = [rp.curl("http://%s:%d/" % (REMOTE, dead)) for _ in range(n)]
    # curl: (7) Failed to connect ...; with -v: "connect to 127.0.0.1 port N failed: Connection refused"
    assert [code for code, _ in statuses] == [7] * n, statuses
    assert all("port %d failed: Connection refused" % dead in err for _, err in statuses), statuses
    expect_errors(daemon, "curl", {}, [dead])
    expect_connect_failures(daemon, "curl", dead, "ECONNREFUSED", n)


# ---- redis-server -----------------------------------------------------------------------------------------

REDIS_READ = re.compile(r"(?:Error r|R)eading from client: (.+)$")
REDIS_WRITE = re.compile(r"Error writing to client: (.+)$")


def redis_failures(log, port):
    out = {}
    for line in log.splitlines():
        for pattern, op in ((REDIS_READ, "recv"), (REDIS_WRITE, "send")):
            m = pattern.search(line)
            if m:
                key = (op, STRERROR[m.group(1).strip()], port)
                out[key] = out.get(key, 0) + 1
    return out


def test_redis_clients_that_reset(daemon, tmp_path):
    n = 3
    with rp.Redis(str(tmp_path)) as redis:
        # clients that reset while redis waits for their next command
        for _ in range(n):
            c = redis.command("PING")
            assert c.recv(64) == b"+PONG\r\n"
            rp.linger0_close(c)
            time.sleep(0.1)
        # clients that reset in the middle of a large reply
        c = redis.command("SET", "big", b"x" * (16 << 20))
        assert c.recv(64) == b"+OK\r\n"
        c.close()
        for _ in range(n):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.connect((REMOTE, redis.port))
            redis.command("GET", "big", conn=c)
            c.recv(1000)
            time.sleep(0.2)
            rp.linger0_close(c)
            time.sleep(0.1)
        time.sleep(0.3)
        connections = int(redis.info("stats")["total_connections_received"])
        failures = redis_failures(redis.log(), redis.port)
    assert connections == 2 * n + 3  # besides ours: the readiness probe, the SET client, the INFO client
    # "Reading from client: Connection reset by peer" (verbose), or "Error writing to client: ..."
    assert sum(failures.values()) == 2 * n, failures
    expect_errors(daemon, "redis-server", failures, [redis.port])


# ---- a Go program -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def go_program(tmp_path_factory):
    return rp.build_go(str(tmp_path_factory.mktemp("go")), scenarios.make_comm("go", "cli"))


def test_go_dial_refused(daemon, go_program):
    n = 3
    dead = rp.dead_port()
    errors = rp.run_go(go_program, "dial", dead, n)
    assert errors == ["dial tcp %s:%d: connect: connection refused" % (REMOTE, dead)] * n
    comm = os.path.basename(go_program)
    expect_errors(daemon, comm, {}, [dead])
    expect_connect_failures(daemon, comm, dead, "ECONNREFUSED", n)


def test_go_read_from_server_that_resets(daemon, go_program):
    n = 3
    server = rp.ResettingServer(n)
    errors = rp.run_go(go_program, "read", server.port, n)
    server.join()
    assert len(errors) == n and all(e.endswith("read: connection reset by peer") for e in errors), errors
    comm = os.path.basename(go_program)
    expect_errors(daemon, comm, {("recv", "ECONNRESET", server.port): n}, [server.port])
    expect_resets_received(daemon, comm, server.port, n)
