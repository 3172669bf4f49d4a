"""errnomon top in a real terminal: tmux runs it against the live test daemon while real socket errors happen.

Each test starts its own tmux server (a private socket, `tmux -L`, with its own config), so nothing touches
the user's tmux, and kills it in `finally`. top runs under a tiny wrapper that writes top's exit status to a
file, so the tests can tell a clean quit (status 0) from a crash. tmux is required: without it these tests
fail, they do not skip (`make test` installs it).
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from monitor import top

from . import scenarios

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTH, HEIGHT, NARROW = 120, 40, 60

WRAPPER = """\
import signal, subprocess, sys
signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C is for top (the same process group); we only report
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write("%d\\n" % rc)
"""

TMUX_CONF = """\
set -g remain-on-exit on
set -g status off
set -g history-limit 0
"""


class Tmux:
    def __init__(self, tmp_path, name, command):
        assert shutil.which("tmux"), "tmux is not installed: run 'sudo make test' (scripts/setup.sh --test installs it)"
        self.socket = "errnomon-test-%d-%s" % (os.getpid(), name)
        self.session = "top-" + name
        self.status_file = tmp_path / (name + ".status")
        conf = tmp_path / (name + ".tmux.conf")
        conf.write_text(TMUX_CONF)
        wrapper = tmp_path / "wrapper.py"
        wrapper.write_text(WRAPPER)
        self.tmux("-f", str(conf), "new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT),
                  "-c", REPO, " ".join([sys.executable, str(wrapper), str(self.status_file)] + command))

    def tmux(self, *args, check=True):
        proc = subprocess.run(["tmux", "-L", self.socket] + list(args), capture_output=True, text=True, timeout=10)
        if check:
            assert proc.returncode == 0, "tmux %s: %s" % (" ".join(args), proc.stderr)
        return proc

    def capture(self):
        """The visible screen, wrapped lines joined (-J): a line that wrapped shows as one long line."""
        return self.tmux("capture-pane", "-p", "-J", "-t", self.session).stdout.splitlines()

    def send(self, *keys):
        self.tmux("send-keys", "-t", self.session, *keys)

    def exit_status(self, timeout):
        """top's exit status once it has exited, or None if it is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_file.exists() and self.status_file.read_text().endswith("\n"):
                return int(self.status_file.read_text())
            time.sleep(0.05)
        return None

    def pane_dead(self):
        return self.tmux("display-message", "-p", "-t", self.session, "#{pane_dead}").stdout.strip() == "1"

    def kill(self):
        self.tmux("kill-session", "-t", self.session, check=False)
        self.tmux("kill-server", check=False)


def top_command(url):
    return [sys.executable, "-m", "monitor.cli", "top", "--url", url]


def refused_row(lines):
    """Tokens of the line showing tt_cli's ECONNREFUSED with a rate above 0, or None."""
    header = column_header(lines)
    if header is None:
        return None
    rate_at = -2 if header.split()[-1] == "TOTAL" else -1  # TOTAL is the first column dropped when narrow
    for line in lines:
        tokens = line.split()
        if len(tokens) >= 4 and tokens[0] == "ECONNREFUSED" and scenarios.make_comm("tt", "cli") in tokens:
            try:
                rate = float(tokens[rate_at])
            except ValueError:
                continue
            if rate > 0:
                return tokens
    return None


def column_header(lines):
    return next((line for line in lines if line.startswith("ERRNO")), None)


def too_wide(lines, width):
    return [line for line in lines if top.cells(line.rstrip()) > width]


def wait_screen(term, ok, timeout, make_errors=None):
    """Capture until ok(lines) holds (making errors between captures, if asked); the last capture."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if make_errors:
            make_errors()
        lines = term.capture()
        if ok(lines):
            return lines
        time.sleep(0.2)
    return lines


class RefusedBurst:
    """Many ECONNREFUSED from a process named tt_cli to one port that is bound but not listening, so they
    all land on one series whose rate ranks it first even while other programs on the host make errors
    (scenarios.refused picks a new port, hence a new series, each time)."""

    def __init__(self):
        self.holder = socket.socket()
        self.holder.bind(("127.0.0.1", 0))  # reserved, never listening: connects are refused
        self.port = self.holder.getsockname()[1]

    def __call__(self, n=25):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with open("/proc/self/comm", "w") as f:
                    f.write(scenarios.make_comm("tt", "cli"))
                for _ in range(n):
                    with socket.socket() as s:
                        try:
                            s.connect(("127.0.0.1", self.port))
                        except ConnectionRefusedError:
                            pass
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the burst child failed (%d)" % status

    def close(self):
        self.holder.close()


def errors_maker(burst):
    def make_errors():
        scenarios.refused("tt", socket.AF_INET)
        burst()
    return make_errors


def assert_full_height(lines):
    """When a table had to leave rows out, the frame fills the pane's height (curses knows its real size)."""
    if any(line.startswith(("\u2026 ", "... ", "~ ")) and line.rstrip().endswith(" more") for line in lines):
        assert len(lines) == HEIGHT and lines[-1].strip(), "rows were left out of a frame shorter than the pane:\n" + \
            "\n".join(lines)


def assert_quit_cleanly(term, how):
    status = term.exit_status(3.0)
    assert status is not None, "errnomon top did not exit within 3 s of %s:\n%s" % (how, "\n".join(term.capture()))
    screen = "\n".join(term.capture())
    assert status == 0, "errnomon top exited with %d after %s:\n%s" % (status, how, screen)
    assert "Traceback" not in screen, screen
    # the terminal is restored: curses left the alternate screen, so the table is gone from the pane
    assert "ERRNO" not in screen and "errnomon top" not in screen, screen
    deadline = time.monotonic() + 3
    while not term.pane_dead() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert term.pane_dead()


def test_top_live_rates_width_resize_and_q(daemon, tmp_path):
    term = Tmux(tmp_path, "q", top_command(daemon.url))
    burst = RefusedBurst()
    make_errors = errors_maker(burst)
    try:
        # real errors while top runs: tt_cli's ECONNREFUSED must show with a rate above 0
        scenarios.reset_on_recv("tt", socket.AF_INET)
        lines = wait_screen(term, lambda ls: refused_row(ls) is not None, 15, make_errors)
        screen = "\n".join(lines)
        assert refused_row(lines), "no line with tt_cli, ECONNREFUSED and a rate > 0 within 15 s:\n" + screen
        assert lines[0].startswith("errnomon top  ") and daemon.url in lines[0], screen
        assert "RATE/s" in column_header(lines), screen
        for title in ("Socket errors returned to applications", "Resets received", "Resets sent", "SIGPIPE"):
            assert title in screen, screen
        assert not too_wide(lines, WIDTH), screen
        assert_full_height(lines)
        wide_header = column_header(lines).rstrip()
        assert top.cells(wide_header) > NARROW, "the table must not fit %d columns already:\n%s" % (NARROW, screen)

        # narrower: top redraws for 60 columns (not merely cut or wrapped by the terminal)
        term.tmux("resize-window", "-t", term.session, "-x", str(NARROW), "-y", str(HEIGHT))

        def fits_narrow(ls):
            header = column_header(ls)
            return (header is not None and header.split()[-1] in ("RATE/s", "TOTAL")
                    and not too_wide(ls, NARROW) and refused_row(ls) is not None)
        lines = wait_screen(term, fits_narrow, 10, make_errors)
        screen = "\n".join(lines)
        assert not too_wide(lines, NARROW), "lines wider than %d after the resize:\n%s" % (NARROW, screen)
        assert fits_narrow(lines), "no full frame for %d columns after the resize:\n%s" % (NARROW, screen)
        assert_full_height(lines)
        assert lines[0].startswith("errnomon top  ")

        term.send("q")
        assert_quit_cleanly(term, "q")
    finally:
        term.kill()
        burst.close()


def test_top_quits_on_ctrl_c(daemon, tmp_path):
    term = Tmux(tmp_path, "ctrlc", top_command(daemon.url))
    burst = RefusedBurst()
    try:
        lines = wait_screen(term, lambda ls: refused_row(ls) is not None, 15, errors_maker(burst))
        assert refused_row(lines), "no line with tt_cli, ECONNREFUSED and a rate > 0 within 15 s:\n" + "\n".join(lines)
        term.send("C-c")
        assert_quit_cleanly(term, "Ctrl-C")
    finally:
        term.kill()
        burst.close()


def test_top_survives_an_unreachable_endpoint(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d/metrics" % s.getsockname()[1]  # bound, not listening: refused
        term = Tmux(tmp_path, "down", top_command(url))
        try:
            want = "! cannot read %s: Connection refused" % url
            lines = wait_screen(term, lambda ls: len(ls) > 1 and ls[1].startswith(want), 10)
            assert len(lines) > 1 and lines[1].startswith(want), "\n".join(lines)
            time.sleep(2.5)  # it keeps retrying, and keeps running
            lines = term.capture()
            assert lines[1].startswith(want) and term.exit_status(0) is None, "\n".join(lines)
            term.send("Q")
            assert_quit_cleanly(term, "Q")
        finally:
            term.kill()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
