"""No silent skips under nested tracing load.

A perf-event tracepoint BPF program is skipped (only bpf_prog_info.recursion_misses counts it) when it fires
while another kprobe/perf-event program runs on the same CPU, e.g. in a timer softirq taken at the exit of
the tick interrupt that landed in the middle of the other program. This test keeps both CPUs busy inside a
slow bpftrace program on raw_syscalls:sys_enter (a perf-event tracepoint, like most tracing tools use) and
meanwhile lets connection attempts time out: the retransmission timer reports each ETIMEDOUT from the timer
softirq, on whatever the CPU was running. errnomon's counts must equal what the clients saw (SO_ERROR), and
its raw tracepoint programs must report no miss. A reference perf-event program (bpftrace, on
sock:inet_sk_error_report) shows how much a perf-event program loses under the same load.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from . import core_scenarios, scenarios
from .test_errors import expect

pytestmark = pytest.mark.bpf

RAW_PROBES = ("sock:inet_sk_error_report", "sock:inet_sock_set_state", "tcp:tcp_destroy_sock",
              "tcp:tcp_receive_reset", "tcp:tcp_send_reset", "sock:sock_send_length", "sock:sock_recv_length",
              "signal:signal_generate", "signal:signal_deliver")


def missed(daemon):
    return {dict(k)["probe"]: v for k, v in daemon.samples("errnomon_probe_missed_total").items()}


def bpftool_programs():
    out = subprocess.run(["bpftool", "prog", "show", "-j"], check=True, capture_output=True, text=True).stdout
    return {p["id"]: p for p in json.loads(out)}


class Hog:
    """bpftrace spinning in a perf-event program on every system call of one busy process per CPU, plus a
    reference perf-event program counting the error reports on the test's port."""

    def __init__(self, port, seconds=30):
        self.comm = scenarios.make_comm("hog", "x")
        before = bpftool_programs()
        script = ('tracepoint:raw_syscalls:sys_enter /comm == "%s"/ { $i = 0; while ($i < 2000) { $i++; } } '
                  'tracepoint:sock:inet_sk_error_report /args->dport == %d/ { @reports = count(); }'
                  % (self.comm, port))
        self.bpftrace = subprocess.Popen(["bpftrace", "-e", script], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        self.reference = None
        while self.reference is None:
            assert self.bpftrace.poll() is None, "bpftrace failed: %s" % self.bpftrace.stdout.read()
            assert time.monotonic() < deadline, "bpftrace did not attach within 60 s"
            time.sleep(0.5)
            new = {i: p for i, p in bpftool_programs().items() if i not in before}
            ids = [i for i, p in new.items() if p.get("name", "").startswith("inet_sk_error_r")]
            if ids and any(p.get("name") == "sys_enter" for p in new.values()):
                self.reference = ids[0]
        self.pids = []
        for cpu in range(min(2, os.cpu_count())):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                try:
                    os.sched_setaffinity(0, {cpu})
                    scenarios._set_comm(self.comm)
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        for _ in range(1000):
                            os.getppid()
                finally:
                    os._exit(0)
            self.pids.append(pid)

    def reference_misses(self):
        return bpftool_programs().get(self.reference, {}).get("recursion_misses", 0)

    def stop(self):
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        misses = self.reference_misses()
        self.bpftrace.send_signal(signal.SIGINT)
        try:
            out = self.bpftrace.communicate(timeout=90)[0]  # detaching can be slow on a loaded machine
        except subprocess.TimeoutExpired:
            self.bpftrace.kill()
            self.bpftrace.wait()
            raise AssertionError("bpftrace did not exit within 90 s of SIGINT")
        assert "Attaching" in out, out
        m = re.search(r"@reports: (\d+)", out)  # printed at exit when it counted anything
        return int(m.group(1)) if m else 0, misses


def dropped(daemon):
    return sum(daemon.samples("errnomon_dropped_total").values())


def test_no_skips_under_nested_tracing_load(daemon):
    """counted + skipped == what the kernel's tracepoints reported: the raw tracepoint programs are skipped only
    on self-recursion, which only inet_sock_set_state (where connect failures are counted) can meet, and such a
    skip is exported.

    The count the kernel reported is the reference perf-event program's runs plus its recursion misses on
    sock:inet_sk_error_report, which fires once per timed-out attempt (tcp_done_with_error()). Known, open: in
    about half the runs on the 2-vCPU CI host the clients read 60 ETIMEDOUT while the kernel's tracepoints
    reported 59 (every consumer agrees: errnomon's state change and error report programs, a second raw
    tracepoint tracer and the perf-event reference all saw 59, with no miss counted anywhere); the 60th
    attempt's failure reached its program without passing either tracepoint. Printed when it happens.
    (This test also found the race of tests/bpf/test_connect_races.py: 58 or 59 of 60 in about 1 run in 4.)"""
    before = missed(daemon)
    dropped_before = dropped(daemon)
    hog = Hog(core_scenarios.TIMEOUT_PORT)
    try:
        time.sleep(1)
        r = core_scenarios.syn_timeouts("nest", socket.AF_INET, n=30)
    finally:
        reference, reference_misses = hog.stop()
    assert r["errors"] == [] and r["unfinished"] == 0
    generated = r["so_errors"].count("ETIMEDOUT")
    assert generated == len(r["so_errors"]) == 60
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]))
    time.sleep(1.5)
    # a full counting map would be counted here, not lost: if another test floods the host, say so
    assert dropped(daemon) == dropped_before, "counts map full meanwhile (other traffic on this host)"
    after = missed(daemon)
    others = [p for p in RAW_PROBES if p != "sock:inet_sock_set_state"]
    assert {p: after[p] - before.get(p, 0) for p in others} == {p: 0 for p in others}
    recursed = after.get("sock:inet_sock_set_state", 0) - before.get("sock:inet_sock_set_state", 0)
    reported = reference + reference_misses
    print("nested load: %d ETIMEDOUT generated, %d reported by the kernel's tracepoint; inet_sock_set_state "
          "skipped %d by self-recursion; a perf-event program counted %d and missed %d"
          % (generated, reported, recursed, reference, reference_misses))
    assert reported <= generated
    if reported < generated:
        print("nested load: the kernel reported %d fewer failures than the clients saw (known, see the docstring)"
              % (generated - reported))
    expect(daemon, cli, "errnomon_connect_failures_total", (dict(peer, errno="ETIMEDOUT"), reported - recursed))
    expect(daemon, cli, "errnomon_socket_error_reports_total")
