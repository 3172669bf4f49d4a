"""deploy/ end to end: a real Prometheus scrapes a real errnomon, loads deploy/prometheus/rules.yml, and answers
every recording rule and every dashboard query while real socket errors happen.

Prometheus is Debian's /usr/bin/prometheus (`make test` installs it), started here on a free loopback port
with its storage in the test's temporary directory, 1 s scrapes and 1 s rule evaluation. A system instance,
if any, is neither used nor touched. The scrape job (job="errnomon") has two targets: a fresh errnomon
started for this test, and a port nobody listens on, whose `up` is 0.

Traffic (all on loopback or in a private network namespace):
- tests/bpf/scenarios.py: a process killed by SIGPIPE, one that handles it, reset on recv, EPIPE after FIN,
  a TCP_USER_TIMEOUT expiry, healthy echo connections;
- "churn" from a thread named e2e_churn: two rounds of 20 orderly and 20 reset connections to one listener,
  the second after Prometheus has scraped the first, so rates see a whole round: reset ratio 1/3 with 60
  connection ends, above both reset-ratio alerts' thresholds;
- "refuse" from a thread named e2e_refuse: 1, then 15 refused connects to one bound, non-listening port.

Alerts with a `for:` clause are checked in the pending state.
"""

import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.unit.test_dashboard import QUERY_VARIABLES, label_values, panel_queries, variables
from tests.unit.test_rules import RULES_PATH, alerting_rules, recording_rules

from . import scenarios
from .conftest import Daemon, _require_environment, free_port

pytestmark = pytest.mark.bpf

PROMETHEUS = "/usr/bin/prometheus"
TEST_BUDGET = 85.0  # seconds for the whole test, errnomon and Prometheus start-up included
PR_SET_NAME = 15
CHURN_COMM = scenarios.make_comm("e2e", "churn")
REFUSE_COMM = scenarios.make_comm("e2e", "refuse")
OVERFLOW_COMM = scenarios.make_comm("e2e", "ovfl")
_libc = ctypes.CDLL(None, use_errno=True)


class Prometheus:
    """`jobs`: scrape configs in place of the errnomon job with `targets` and the rules; `port`: its own."""

    def __init__(self, tmp_path, targets=(), jobs=None, port=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [RULES_PATH] if jobs is None else [],
            "scrape_configs": jobs or [{"job_name": "errnomon", "static_configs": [{"targets": list(targets)}]}],
        }
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = open(tmp_path / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % config_file, "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            cwd=tmp_path, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-5000:]

    def wait_ready(self, deadline):
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited with %s:\n%s" % (self.proc.returncode, self.output())
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus not ready in time:\n" + self.output())

    def api(self, path, **params):
        url = "%s/api/v1/%s?%s" % (self.url, path, urllib.parse.urlencode(params, doseq=True))
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError("%s: HTTP %s %s" % (url, e.code, e.read().decode(errors="replace")))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def value(self, expr):
        """The single value of an expression, or None while it has none."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def wait_until(what, check, deadline, interval=0.25):
    """Call check() until it returns a true value (returned) or the deadline passes (failure naming `what`)."""
    last = None
    while True:
        try:
            got = check()
            if got:
                return got
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out waiting for %s%s" % (what, ": %s" % last if last else ""))
        time.sleep(interval)


def in_named_thread(comm, fn, *args):
    """Run fn in a thread whose comm is `comm`: errnomon attributes its sockets to that name."""
    out = {}

    def run():
        try:
            if _libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm.encode()), 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
            out["value"] = fn(*args)
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run, name=comm, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "%s did not finish" % comm
    if "error" in out:
        raise out["error"]
    return out.get("value")


def listen():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    ls.settimeout(5)
    return ls


def churn(ls, orderly, reset):
    """`orderly` connections closed with FINs by both sides, then `reset` ones the server aborts (RST)."""
    port = ls.getsockname()[1]
    for i in range(orderly + reset):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        s, _ = ls.accept()
        s.settimeout(5)
        if i < orderly:
            c.close()                     # FIN from the client
            assert s.recv(1) == b""      # the server has it: CLOSE_WAIT
            s.close()                     # FIN from the server
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()                     # RST
            with pytest.raises(ConnectionResetError):
                c.recv(1)                 # the client has received it
            c.close()


def refuse(port, n):
    for _ in range(n):
        c = socket.socket()
        c.settimeout(5)
        try:
            with pytest.raises(ConnectionRefusedError):
                c.connect(("127.0.0.1", port))
        finally:
            c.close()


def overflowing_listener(n):
    """A child process named OVERFLOW_COMM listening with backlog 1, never accepting, with n connects
    waiting on it: the SYNs past its queue of two are dropped (listen drops). Returns (pid, port); the
    caller kills it. It exits by itself after 120 s at the latest."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _libc.prctl(PR_SET_NAME, ctypes.c_char_p(OVERFLOW_COMM.encode()), 0, 0, 0)
            ls = socket.socket()
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            clients = [socket.socket() for _ in range(n)]
            for c in clients:
                c.setblocking(False)
                c.connect_ex(ls.getsockname())
            os.write(w, b"%d\n" % ls.getsockname()[1])
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        return pid, f.readline().strip()


def alerts_by_name(prom):
    out = {}
    for a in prom.api("alerts")["alerts"]:
        out.setdefault(a["labels"]["alertname"], []).append(a)
    return out


def test_prometheus_rules_and_dashboard_on_live_errnomon(tmp_path):
    started = time.monotonic()
    deadline = started + TEST_BUDGET
    _require_environment()
    assert os.access(PROMETHEUS, os.X_OK), \
        "%s not found: run 'make test' (scripts/setup.sh --test installs Debian's prometheus package)" % PROMETHEUS

    daemon = prom = None
    blocker = ls = overflow_pid = None
    try:
        daemon = Daemon(tmp_path, name="errnomon-e2e")
        live = "127.0.0.1:%d" % daemon.port
        dead = "127.0.0.1:%d" % free_port()  # nobody listens: up == 0
        prom = Prometheus(tmp_path, [live, dead])
        prom.wait_ready(deadline)
        wait_until("the first scrape of errnomon",
                   lambda: prom.value('up{job="errnomon", instance="%s"}' % live) == 1, deadline)

        # --- real socket errors
        killed = scenarios.sigpipe("e2esp", "killed")
        assert killed["exit_signal"] == signal.SIGPIPE, killed
        killed_comm = killed["comms"]["cli"]
        handled = scenarios.sigpipe("e2esh", "handled")
        assert handled["errnos"]["cli"] == ["ECONNRESET", "EPIPE"], handled
        r = scenarios.reset_on_recv("e2err")
        assert r["errnos"]["cli"] == ["ECONNRESET", "EOF"], r
        r = scenarios.epipe_after_fin("e2eef")
        assert r["errnos"]["cli"] == ["EPIPE"], r
        timed_out = scenarios.timeout("e2eto")
        assert timed_out["errnos"]["cli"] == ["ETIMEDOUT"], timed_out
        r = scenarios.healthy("e2eok", n=10)
        assert r["completed"] == 10 and not any(r["errnos"].values()), r

        # --- reset ratio and refusal bursts: a first round, scraped, then the round the rates see
        ls = in_named_thread(CHURN_COMM, listen)
        churn_port = str(ls.getsockname()[1])
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))  # bound, never listening: connects to it are refused
        refused_port = str(blocker.getsockname()[1])
        in_named_thread(CHURN_COMM, churn, ls, 20, 20)
        in_named_thread(REFUSE_COMM, refuse, int(refused_port), 1)
        peer = 'job="errnomon", instance="%s", remote="127.0.0.1", port="%s"' % (live, churn_port)
        wait_until("round 1 in Prometheus", lambda: (
            prom.value("sum(errnomon_tcp_fins_sent_total{%s})" % peer) == 40
            and prom.value("sum(errnomon_tcp_resets_received_total{%s})" % peer) == 20
            and prom.value('sum(errnomon_connect_failures_total{job="errnomon", errno="ECONNREFUSED", '
                           'port="%s"})' % refused_port) == 1), deadline)
        in_named_thread(CHURN_COMM, churn, ls, 20, 20)
        in_named_thread(REFUSE_COMM, refuse, int(refused_port), 15)
        overflow_pid, overflow_port = overflowing_listener(8)
        traffic_done = time.monotonic()

        # --- everything Prometheus must now answer
        records = [r["record"] for r in recording_rules()]
        alert_names = {a["alert"] for a in alerting_rules()}
        probes_missing = {dict(labels)["probe"] for (name, labels), v in daemon.scrape().items()
                          if name == "errnomon_probe_attached" and v == 0}
        # Grafana's regex form of a multi-value selection, values escaped as in a PromQL string
        chosen = {
            "instance": "(%s)" % live.replace(".", "\\\\."),
            "comm": "(%s)" % "|".join([killed_comm, handled["comms"]["cli"], CHURN_COMM, REFUSE_COMM, OVERFLOW_COMM] + [
                scenarios.make_comm(p, r) for p, r in (("e2eto", "cli"), ("e2err", "cli"), ("e2eto", "srv"),
                                                       ("e2err", "srv"), ("e2eef", "cli"), ("e2eok", "cli"),
                                                       ("e2eok", "srv"))]),
            "errno": "(ECONNRESET|EPIPE|ETIMEDOUT|ECONNREFUSED)",
        }

        def check_rules_loaded():
            groups = prom.api("rules")["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            assert {r["name"] for r in loaded} == set(records) | alert_names, "rules.yml not fully loaded"
            bad = [(r["name"], r.get("health"), r.get("lastError")) for r in loaded if r.get("health") != "ok"]
            assert not bad, "rules not (yet) evaluated cleanly: %s" % bad
            return True

        def check_recording_rules():
            empty = [name for name in records if not prom.query(name)]
            assert not empty, "recording rules without data: %s" % empty
            for level, match in (("instance_comm", 'comm="%s"' % CHURN_COMM),
                                 ("instance_remote_port", 'remote="127.0.0.1", port="%s"' % churn_port)):
                ratio = prom.value("%s:errnomon_tcp_peer_resets_per_peer_closes:ratio_rate5m{%s}"
                                   % (level, match))
                ends = prom.value("%s:errnomon_tcp_peer_closes:rate5m{%s}" % (level, match))
                # in the window: 20 resets received while open, 20 FINs received first (the server's side of
                # the orderly closes; the client's FIN_WAIT2 answer is not one): 1/2, and 40 ends
                assert ratio is not None and abs(ratio - 1 / 2) < 0.05, (level, ratio)
                assert ends is not None and ends * 300 >= 39, (level, ends)
            return True

        def check_panels():
            for values, form in ((None, "All"), (chosen, "regex")):
                empty = [(title, ref, expr) for title, ref, expr, _ in panel_queries(values)
                         if not prom.query(expr)]
                assert not empty, "dashboard queries without data (%s): %s" % (form, empty)
                for name in QUERY_VARIABLES:
                    selector, label = label_values(variables()[name], values)
                    found = {s.get(label) for s in prom.api("series", **{"match[]": selector})}
                    assert found - {None, ""}, "variable %s (%s) has no values" % (name, form)
                    if name == "instance":
                        assert live in found, found
            return True

        def check_alerts():
            active = alerts_by_name(prom)

            def states(name, **labels):
                return {a["state"] for a in active.get(name, [])
                        if all(a["labels"].get(k) == v for k, v in labels.items())}

            want = [
                ("ErrnomonSigpipeKilled", dict(instance=live, comm=killed_comm, action="killed")),
                ("ErrnomonProcessResetRatioHigh", dict(instance=live, comm=CHURN_COMM)),
                ("ErrnomonPeerResetRatioHigh", dict(instance=live, remote="127.0.0.1", port=churn_port)),
                ("ErrnomonConnectFailures", dict(instance=live, remote="127.0.0.1", port=refused_port,
                                                 errno="ECONNREFUSED")),
                ("ErrnomonDown", dict(instance=dead)),
                ("ErrnomonListenQueueOverflow", dict(instance=live, comm=OVERFLOW_COMM, port=overflow_port)),
            ]
            missing = [(name, labels) for name, labels in want
                       if not states(name, **labels) & {"pending", "firing"}]
            assert not missing, "alerts not active: %s" % missing
            # and those that must stay silent
            assert not states("ErrnomonSigpipeKilled", comm=handled["comms"]["cli"]), "a handled SIGPIPE alerted"
            assert not states("ErrnomonDown", instance=live)
            assert not states("ErrnomonCountsDropped", instance=live)
            assert not states("ErrnomonSeriesOverflow", instance=live)
            not_attached = {a["labels"]["probe"] for a in active.get("ErrnomonProbeNotAttached", [])
                            if a["labels"]["instance"] == live}
            assert not_attached == probes_missing, (not_attached, probes_missing)
            return True

        wait_until("every rule loaded and evaluated", check_rules_loaded, deadline)
        wait_until("data from every recording rule", check_recording_rules, deadline)
        wait_until("data from every dashboard query", check_panels, deadline)
        wait_until("the expected alerts", check_alerts, deadline)
        print("e2e: %.1f s in all, %.1f s from the last traffic to every check passing"
              % (time.monotonic() - started, time.monotonic() - traffic_done))
    finally:
        for s in (ls, blocker):
            if s is not None:
                s.close()
        if overflow_pid is not None:
            os.kill(overflow_pid, signal.SIGKILL)
            os.waitpid(overflow_pid, 0)
        if prom is not None:
            prom.stop()
        if daemon is not None:
            rc = daemon.stop()
            assert rc == 0, "errnomon did not exit cleanly (%s):\n%s" % (rc, daemon.output())
    assert time.monotonic() - started < 90
