"""Self-check of the socket-error generators in scenarios.py.

No eBPF here: these tests only assert what the applications themselves saw
(errno of every interesting syscall, the comm each actor set, how it ended),
so a BPF test that fails can blame the monitor, not the generator.
Scenarios run real loopback traffic; ``timeout`` needs root, ip and nft.
"""

import os
import shutil
import signal
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios  # noqa: E402

FAMILIES = [
    pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", id="ipv6"),
]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _check_family(family):
    assert family != socket.AF_INET6 or _ipv6_loopback(), "no IPv6 loopback (::1): the IPv6 scenarios need it"


def _check_common(res, prefix, roles, remote="127.0.0.1"):
    assert res["comms"] == {r: scenarios.make_comm(prefix, r) for r in roles}
    assert set(res["errnos"]) == set(roles)
    assert res["remote"] == remote
    assert isinstance(res["port"], int) and 0 < res["port"] < 65536
    assert res["duration"] < 10


def _clean_exit(res, role):
    assert res["exits"][role] == {"code": 0, "signal": None}


def test_make_comm_truncates_to_15():
    assert scenarios.make_comm("t3", "cli") == scenarios.RUN_TAG + "t3_cli"
    assert scenarios.make_comm("averylongprefix", "srv") == (scenarios.RUN_TAG + "averylongprefix")[:15]
    assert len(scenarios.make_comm("x" * 20, "cli")) == 15


def test_long_prefix_comm_is_truncated_by_kernel_too():
    res = scenarios.refused("sc_longprefix_x")
    assert res["comms"] == {"cli": scenarios.make_comm("sc_longprefix_x", "cli")}
    assert res["errnos"] == {"cli": ["ECONNREFUSED"]}


@pytest.mark.parametrize("family,remote", FAMILIES)
def test_reset_on_send(family, remote):
    _check_family(family)
    res = scenarios.reset_on_send("sc1", family)
    _check_common(res, "sc1", ("srv", "cli"), remote)
    assert res["family"] == family
    assert res["errnos"] == {"srv": [], "cli": ["ECONNRESET", "EPIPE"]}
    assert res["calls"]["cli"] == [["connect", "OK"], ["send", "ECONNRESET"], ["send", "EPIPE"]]
    assert res["info"]["srv"]["port"] == res["port"]
    _clean_exit(res, "srv")
    _clean_exit(res, "cli")


@pytest.mark.parametrize("family,remote", FAMILIES)
def test_reset_on_recv(family, remote):
    _check_family(family)
    res = scenarios.reset_on_recv("sc2", family)
    _check_common(res, "sc2", ("srv", "cli"), remote)
    assert res["errnos"] == {"srv": [], "cli": ["ECONNRESET", "EOF"]}
    assert res["calls"]["cli"] == [["connect", "OK"], ["recv", "ECONNRESET"], ["recv", "EOF"]]
    _clean_exit(res, "srv")
    _clean_exit(res, "cli")


def test_epipe_after_fin():
    res = scenarios.epipe_after_fin("sc3")
    _check_common(res, "sc3", ("srv", "cli"))
    assert res["errnos"] == {"srv": [], "cli": ["EPIPE"]}
    assert res["calls"]["cli"] == [
        ["connect", "OK"], ["recv", "EOF"], ["send", "OK"], ["send", "EPIPE"]]
    assert res["calls"]["srv"] == [["accept", "OK"]]
    _clean_exit(res, "cli")


@pytest.mark.parametrize("family,remote", FAMILIES)
def test_refused(family, remote):
    _check_family(family)
    res = scenarios.refused("sc4", family)
    _check_common(res, "sc4", ("cli",), remote)
    assert res["errnos"] == {"cli": ["ECONNREFUSED"]}
    _clean_exit(res, "cli")


def test_sigpipe_killed():
    res = scenarios.sigpipe("sc5k", "killed")
    _check_common(res, "sc5k", ("srv", "cli"))
    assert res["action"] == "killed"
    # the second send never returns to user space: SIGPIPE kills the client
    assert res["errnos"] == {"srv": [], "cli": ["ECONNRESET"]}
    assert res["info"]["cli"]["fatal_send"] is True
    assert res["exit_signal"] == signal.SIGPIPE == 13
    assert res["exits"]["cli"] == {"code": None, "signal": 13}
    _clean_exit(res, "srv")


def test_sigpipe_ignored():
    res = scenarios.sigpipe("sc5i", "ignored")
    _check_common(res, "sc5i", ("srv", "cli"))
    assert res["errnos"] == {"srv": [], "cli": ["ECONNRESET", "EPIPE"]}
    assert res["exit_signal"] is None
    _clean_exit(res, "cli")


def test_sigpipe_handled():
    res = scenarios.sigpipe("sc5h", "handled")
    _check_common(res, "sc5h", ("srv", "cli"))
    assert res["errnos"] == {"srv": [], "cli": ["ECONNRESET", "EPIPE"]}
    assert res["sigpipes_handled"] == 1
    assert res["exit_signal"] is None
    _clean_exit(res, "cli")


def test_sigpipe_rejects_unknown_action():
    with pytest.raises(ValueError):
        scenarios.sigpipe("sc5x", "bogus")


def test_timeout():
    assert os.geteuid() == 0, "the timeout scenario needs root (network namespace, nftables): run 'sudo make test'"
    assert shutil.which("ip") and shutil.which("nft"), "needs ip and nft: 'make test' installs iproute2, nftables"
    res = scenarios.timeout("sc6")
    _check_common(res, "sc6", ("srv", "cli"))
    assert res["errnos"] == {"srv": [], "cli": ["ETIMEDOUT"]}
    assert res["calls"]["cli"] == [["connect", "OK"], ["send", "OK"], ["recv", "ETIMEDOUT"]]
    assert 0.5 < res["info"]["cli"]["recv_seconds"] < 8
    # the namespace is gone again
    assert not os.path.exists(f"/run/netns/{res['netns']}")
    _clean_exit(res, "srv")
    _clean_exit(res, "cli")


def test_healthy():
    res = scenarios.healthy("sc7", n=20)
    _check_common(res, "sc7", ("srv", "cli"))
    assert res["errnos"] == {"srv": [], "cli": []}
    assert res["connections"] == res["completed"] == res["served"] == 20
    assert res["calls"]["cli"].count(["connect", "OK"]) == 20
    assert res["calls"]["srv"].count(["recv", "EOF"]) == 20  # client closed first
    _clean_exit(res, "srv")
    _clean_exit(res, "cli")


def test_fin_close():
    res = scenarios.fin_close("sc8")
    _check_common(res, "sc8", ("srv", "cli"))
    assert res["errnos"] == {"srv": [], "cli": []}
    assert res["calls"]["srv"] == [["accept", "OK"], ["recv", "EOF"]]
    assert res["calls"]["cli"] == [["connect", "OK"]]
    _clean_exit(res, "srv")
    _clean_exit(res, "cli")


def test_children_never_outlive_the_scenario():
    res = scenarios.reset_on_send("sc9")
    for pid in res["pids"].values():
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
