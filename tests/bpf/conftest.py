"""A real errnomon daemon for the BPF integration tests: root, bcc, tracepoints, real sockets."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Peers of the distinct-peer churn test (tests/bpf/test_daemon.py) are in 127.64.0.0/10: one label here,
# so that its 200,000 peers never spend this daemon's series budget (every daemon counts the whole host).
CHURN_NET = "127.64.0.0/10"
TEST_CONFIG = """
remote:
  groups:
    - name: churn
      cidrs: [%s]
series:
  budget: 5000
kernel:
  drain_interval: 500ms
  syscall_tracepoints: true
""" % CHURN_NET


def kernel_reset_reason(name):
    """The reason label a reset the kernel names `name` gets here: the kernel names reasons from 6.10 (the
    tcp_send_reset format file has the field); before, errnomon's label is "unknown"."""
    for tracefs in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            with open(os.path.join(tracefs, "events/tcp/tcp_send_reset/format")) as f:
                return name if " reason;" in f.read() else "unknown"
        except OSError:
            continue
    return "unknown"


def tracepoint_exists(event):
    """The running kernel's own tracefs: event is "category/name"."""
    return any(os.path.isdir(os.path.join(t, "events", event)) for t in ("/sys/kernel/tracing",
                                                                        "/sys/kernel/debug/tracing"))


def function_exists(name):
    """In the kernel's symbol table (/proc/kallsyms, read as root)."""
    with open("/proc/kallsyms") as f:
        return any(len(line.split()) >= 3 and line.split()[2] == name for line in f)


def kprobes_exist():
    return any(os.path.exists(os.path.join(t, "kprobe_events")) for t in ("/sys/kernel/tracing",
                                                                         "/sys/kernel/debug/tracing"))


def _arguments(function):
    """How many arguments the running kernel's function takes (its BTF), None if it has none there."""
    from monitor import btf
    proto = btf.BTF.load().func_proto(function)
    return None if proto is None else len(proto[1])


def ttls_seen():
    """(peer's, reset's): whether this kernel lets errnomon see them (kprobes, and the functions' arguments)."""
    if not kprobes_exist():
        return False, False
    peer = function_exists("tcp_init_transfer") and (_arguments("tcp_init_transfer") or 0) >= 3
    rst = function_exists("tcp_reset") and (_arguments("tcp_reset") or 0) >= 2
    return peer, rst


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`args`: more flags; `port`: the metrics port (default: a free one); `scheme`, `ssl_context` and
    `headers`: how scrape() reaches it (a web config's TLS and basic auth)."""

    ssl_context, headers = None, {}  # plain HTTP, also for subclasses with an __init__ of their own

    def __init__(self, tmp_path, config_text=TEST_CONFIG, name="errnomon", env=None, args=(), port=None,
                 scheme="http", ssl_context=None, headers=None):
        self.config = tmp_path / (name + ".yaml")
        self.config.write_text(config_text)
        self.port = port or free_port()
        self.url = "%s://127.0.0.1:%d/metrics" % (scheme, self.port)
        self.ssl_context, self.headers = ssl_context, headers or {}
        self.log = open(tmp_path / (name + ".log"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--config.file=%s" % self.config,
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=debug", *args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 180  # compiling takes 1.6-4 s here, up to a minute in an emulated guest
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("errnomon exited with %s:\n%s" % (self.proc.returncode, self.output()))
            try:
                self.scrape()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("errnomon did not serve metrics within 180 s:\n" + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def scrape_text(self):
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=10, context=self.ssl_context) as r:
            return r.read().decode()

    def scrape(self):
        """{(metric name, frozenset(labels)): value} for every sample."""
        out = {}
        for family in text_string_to_metric_families(self.scrape_text()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def samples(self, name, **match):
        """{labels dict as sorted tuple: value} of a metric's samples whose labels include `match`."""
        found = {}
        for (n, labels), value in self.scrape().items():
            d = dict(labels)
            if n == name and all(d.get(k) == v for k, v in match.items()):
                found[tuple(sorted(d.items()))] = value
        return found

    def wait_for(self, name, expected, timeout=8.0, **match):
        """Wait until the samples matching `match` are exactly `expected` ({frozen labels: value}),
        then one more full drain cycle to prove nothing more arrives."""
        expected = {tuple(sorted(k.items())): v for k, v in expected}
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.samples(name, **match)
            if got == expected:
                time.sleep(1.2)  # two drain intervals: a late increment would show now
                got = self.samples(name, **match)
                break
            time.sleep(0.1)
        assert got == expected, "%s%s:\n got      %s\n expected %s" % (name, match, got, expected)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _require_environment():
    # Not a skip: these tests are the point of errnomon; without root and tracefs they must fail loudly.
    assert os.geteuid() == 0, "BPF integration tests need root: run 'sudo make test'"
    assert os.path.isdir("/sys/kernel/tracing/events"), "tracefs is not mounted: run 'make setup'"


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    _require_environment()
    d = Daemon(tmp_path_factory.mktemp("errnomon"))
    yield d
    rc = d.stop()
    assert rc == 0, "errnomon did not exit cleanly on SIGTERM (%s):\n%s" % (rc, d.output())


def labels(**kw):
    return kw
