"""The systemd unit, and the notify protocol as a real errnomon daemon speaks it.

The daemon runs as in tests/bpf/conftest.py (root, the repository's code), with NOTIFY_SOCKET pointing at
an AF_UNIX datagram socket this test bound (a path, and an abstract "@name") and WATCHDOG_USEC=1000000.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import pytest

from .conftest import REPO, TEST_CONFIG, Daemon, _require_environment, free_port

pytestmark = pytest.mark.bpf

UNIT = os.path.join(REPO, "deploy", "systemd", "errnomon.service")
WATCHDOG_USEC = 1000000


def systemd_analyze():
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: apt-get install systemd"
    return path


def unit_for_checks(tmp_path):
    """The unit with ExecStart pointing at the development venv's errnomon, which exists here."""
    with open(UNIT) as f:
        text = f.read()
    assert ("ExecStart=/opt/errnomon/venv/bin/errnomon --config.file=/etc/errnomon/config.yaml "
            "--web.listen-address=127.0.0.1:9779\n") in text
    path = tmp_path / "errnomon.service"
    path.write_text(text.replace("/opt/errnomon/venv/bin/errnomon", os.path.join(REPO, ".venv/bin/errnomon")))
    return str(path)


def unit_settings():
    """{key: [values]} of the [Service] section (keys may repeat)."""
    settings, section = {}, None
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and line and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
    return settings


def test_unit_verifies(tmp_path):
    proc = subprocess.run([systemd_analyze(), "verify", unit_for_checks(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_unit_exposure_does_not_regress(tmp_path):
    """systemd-analyze security (offline) rates the unit 2.0; loosening any setting raises that and fails here."""
    proc = subprocess.run([systemd_analyze(), "security", "--offline=true", "--threshold=20", "--no-pager",
                           unit_for_checks(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unit_essentials():
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Environment"] == ["ERRNOMON_BPF_DIR=/opt/errnomon/bpf"]
    caps = "CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH"
    assert s["CapabilityBoundingSet"] == [caps] and s["AmbientCapabilities"] == [caps]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "DynamicUser",
                "MemoryDenyWriteExecute"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # what bcc/errnomon cannot tolerate stays off, and says why
    assert s["ProtectKernelModules"] == ["no"] and s["ProcSubset"] == ["all"]
    assert "PrivateUsers" not in s and "PrivateNetwork" not in s
    # the watchdog must outlast the longest drain interval (10 s) twice over
    assert int(s["WatchdogSec"][0].rstrip("s")) > 2 * 10


class Receiver:
    """An AF_UNIX datagram socket collecting (monotonic time, message) in a thread. On READY=1 it scrapes
    `url` at once and records whether that worked."""

    def __init__(self, address, url):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.url = url
        self.messages = []
        self.scrape_at_ready = None
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            message = data.decode()
            if "READY=1" in message.split("\n"):
                try:
                    with urllib.request.urlopen(self.url, timeout=5) as r:
                        self.scrape_at_ready = r.status == 200 and b"errnomon_probe_attached" in r.read()
                except OSError as e:
                    self.scrape_at_ready = e
            self.messages.append((now, message))

    def lines(self):
        return [line for _, m in list(self.messages) for line in m.split("\n")]

    def wait_for(self, line, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in list(self.messages):
                if line in m.split("\n"):
                    return t
            time.sleep(0.02)
        raise AssertionError("%r not received within %ss; got %r" % (line, timeout, self.lines()))

    def close(self):
        self.done = True
        self.thread.join(2)
        self.sock.close()


class NotifyDaemon(Daemon):
    """conftest's Daemon with extra environment, and without waiting for /metrics: the test waits for READY=1."""

    def __init__(self, tmp_path, port, env, config_text=TEST_CONFIG, name="notify"):
        self.config = tmp_path / (name + ".yaml")
        self.config.write_text(config_text)
        self.port = port
        self.url = "http://127.0.0.1:%d/metrics" % self.port
        self.log = open(tmp_path / (name + ".log"), "w+")
        environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        environ.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--config.file=%s" % self.config,
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=debug"],
            cwd=REPO, env=environ, stdout=self.log, stderr=subprocess.STDOUT)


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes: keep clear of pytest's long tmp_path names.
    path = tempfile.mkdtemp(prefix="sdn")
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notify_sequence(tmp_path, short_dir, kind):
    _require_environment()
    if kind == "path":
        address = notify_socket = os.path.join(short_dir, "notify")
    else:
        name = "errnomon-test-%s" % uuid.uuid4().hex
        address, notify_socket = "\0" + name, "@" + name
    port = free_port()
    receiver = Receiver(address, "http://127.0.0.1:%d/metrics" % port)
    d = None
    try:
        d = NotifyDaemon(tmp_path, port, {"NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        ready_at = receiver.wait_for("READY=1", timeout=60)
        assert receiver.scrape_at_ready is True, "scrape at READY=1 failed: %r\n%s" % (receiver.scrape_at_ready,
                                                                                     d.output())
        # start-up: STATUS= lines, then READY=1, exactly once
        lines = receiver.lines()
        before = lines[:lines.index("READY=1")]
        statuses = [line for line in before if line.startswith("STATUS=")]
        assert statuses[0] == "STATUS=loading BPF programs", lines
        assert statuses[-1] == "STATUS=serving metrics on 127.0.0.1:%d/metrics" % d.port, lines
        assert all(line.startswith("STATUS=") for line in before), lines
        assert lines.count("READY=1") == 1

        # watchdog: WATCHDOG_USEC=1s means a ping every 0.5 s; none may come later than the 1 s deadline
        time.sleep(2.6)
        pings = [t for t, m in list(receiver.messages) if m == "WATCHDOG=1" and t > ready_at]
        assert len(pings) >= 4, receiver.lines()
        gaps = [b - a for a, b in zip([ready_at] + pings, pings)]
        assert max(gaps) < 0.9, gaps
        assert 0.4 <= sorted(gaps)[len(gaps) // 2] <= 0.7, gaps

        # SIGHUP reloads and keeps running (and pinging)
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "config reloaded" not in d.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "config reloaded" in d.output(), d.output()
        hup_at = time.monotonic()
        time.sleep(1.2)
        assert d.proc.poll() is None, d.output()
        assert any(m == "WATCHDOG=1" and t > hup_at for t, m in list(receiver.messages)), receiver.lines()
        assert d.scrape()

        # SIGTERM: STOPPING=1, then exit 0
        d.signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0, d.output()
        receiver.wait_for("STOPPING=1", timeout=2)
        final = receiver.lines()
        assert final.count("STOPPING=1") == 1, final
        assert not [line for line in final[final.index("STOPPING=1") + 1:] if line in ("READY=1", "WATCHDOG=1")], final
    finally:
        if d is not None:
            d.stop()
        receiver.close()
