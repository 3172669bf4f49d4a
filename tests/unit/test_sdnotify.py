"""monitor/sdnotify.py: the systemd notify protocol over real AF_UNIX datagram sockets."""

import os
import shutil
import socket
import tempfile
import uuid

import pytest

from monitor import sdnotify


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes: keep clear of pytest's long tmp_path names.
    path = tempfile.mkdtemp(prefix="sdn")
    yield path
    shutil.rmtree(path)


def receiver(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.mark.parametrize("message", ["READY=1", "READY=1\nSTATUS=serving metrics on :9779", "WATCHDOG=1",
                                     "STATUS=naïve ünïcode"])
def test_notify_path_socket(short_dir, message):
    path = os.path.join(short_dir, "notify")
    with receiver(path) as sock:
        assert sdnotify.notify(message, environ={"NOTIFY_SOCKET": path}) is True
        assert sock.recv(4096) == message.encode()


def test_notify_abstract_socket():
    name = "errnomon-test-%s" % uuid.uuid4().hex
    with receiver("\0" + name) as sock:
        assert sdnotify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "1000000"}],
                         ids=["unset", "empty", "other-vars-only"])
def test_notify_without_socket(environ):
    assert sdnotify.notify("READY=1", environ=environ) is False


def test_notify_unreachable_socket(short_dir):
    """A stale NOTIFY_SOCKET is reported, not raised: it must not take the daemon down."""
    missing = os.path.join(short_dir, "gone")
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": missing}) is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@errnomon-nobody-%s" % uuid.uuid4().hex}) is False


@pytest.mark.parametrize(
    "environ, interval",
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
    ],
)
def test_watchdog_interval(environ, interval):
    assert sdnotify.watchdog_interval(environ=environ) == interval
