"""The systemd notify protocol over $NOTIFY_SOCKET (abstract sockets included); silent when not under systemd."""

import os
import socket


def notify(message, environ=os.environ):
    """Send one notify datagram (e.g. 'READY=1\\nSTATUS=...'). Returns True if sent."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
    except OSError:  # a stale or unreachable NOTIFY_SOCKET must not stop the daemon (as sd_notify(3))
        return False
    return True


def watchdog_interval(environ=os.environ):
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when the watchdog is off."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
