"""A kernel without BTF: errnomon starts, says in one line what is lost, and counts the rest exactly."""

import socket

import pytest

from . import scenarios
from .conftest import Daemon, _require_environment
from .test_errors import expect

pytestmark = pytest.mark.bpf


def test_runs_without_btf_and_says_what_is_lost(tmp_path, monkeypatch):
    _require_environment()
    monkeypatch.setenv("ERRNOMON_KERNEL_BTF", str(tmp_path / "no-vmlinux"))
    d = Daemon(tmp_path, name="nobtf")
    try:
        attached = {dict(k)["probe"]: v for k, v in d.samples("errnomon_probe_attached").items()}
        # sk_err's place is unknown: no error reports or connect failures; everything else attaches
        assert attached.pop("sock:inet_sk_error_report") == 0
        assert set(attached.values()) == {1.0}
        r = scenarios.reset_on_send("nb", socket.AF_INET)
        assert r["errnos"]["cli"] == ["ECONNRESET", "EPIPE"]
        cli, srv, peer = r["comms"]["cli"], r["comms"]["srv"], dict(remote=r["remote"], port=str(r["port"]))
        expect(d, cli, "errnomon_socket_errors_total",
               (dict(peer, errno="ECONNRESET", op="send"), 1), (dict(peer, errno="EPIPE", op="send"), 1))
        expect(d, cli, "errnomon_tcp_resets_received_total", (dict(peer, state="ESTABLISHED"), 1))
        expect(d, srv, "errnomon_tcp_resets_sent_total", (dict(peer, reason="TCP_STATE"), 1))
        expect(d, cli, "errnomon_socket_error_reports_total")
    finally:
        rc = d.stop()
    assert rc == 0
    lines = [line for line in d.output().splitlines() if "level=warn " in line]
    assert len(lines) == 1 and "kernel BTF" in lines[0], lines
    for lost in ("IPv6 peers", "connect failures are not counted", "listeners"):
        assert lost in lines[0], lost
