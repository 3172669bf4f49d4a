"""The errnomon command line, run as `python -m monitor.cli` subprocesses.

Every failure here happens before BPF is loaded, so no root and no bcc are needed: exit status 2 and one
line on stderr, "errnomon: error: <what is wrong>: <how to fix it>", never a traceback.
"""

import os
import pwd
import socket
import subprocess
import sys

import pytest

from monitor import loader

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO_ROOT, "config.example.yaml")
FLAGS = ("--config.file", "--config.check", "--web.listen-address", "--web.telemetry-path", "--log.level",
         "--log.format")


def run(*args, env=None, **kwargs):
    env = {k: v for k, v in (env or os.environ).items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, **kwargs)


def assert_fails(proc):
    """Exit 2 and exactly one line on stderr: the error. Returns that line's message."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("errnomon: error: "), lines[0]
    assert proc.stdout == ""
    return lines[0][len("errnomon: error: "):]


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "absent.yaml")
    message = assert_fails(run("--config.file=" + path))
    assert message == "%s: cannot read config file: No such file or directory: check --config.file" % path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("# comment\nlabels:\n  pid: true: false\n", "line 3: invalid YAML: mapping values are not allowed here"),
        ("labels:\n  pid: true\n\tunit: false\n", "line 3: invalid YAML: found character '\\t' that cannot "
                                                  "start any token (while scanning for the next token)"),
    ],
    ids=["mapping", "tab"],
)
def test_invalid_yaml(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert assert_fails(run("--config.file", path)) == "%s: %s" % (path, expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("series:\n  bugdet: 10\n",
         "series.bugdet: unknown key; valid keys here: budget, ttl; did you mean 'budget'?"),
        ("remote:\n  groups:\n    - {name: lan, cidrs: [10.0.0.0/8], extra: 1}\n",
         "remote.groups[0].extra: unknown key; valid keys here: name, cidrs, paths"),
        ("remote:\n  groups:\n    - name: lan\n      cidrs: [10.0.0.0/33]\n",
         "remote.groups[0].cidrs[0]: '10.0.0.0/33' is not a valid CIDR network: '33' is not a valid netmask"),
        ("remote:\n  groups:\n    - name: lan\n      cidrs: [10.0.0.1/8]\n",
         "remote.groups[0].cidrs[0]: '10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?"),
    ],
    ids=["unknown-key", "unknown-group-key", "bad-cidr", "cidr-host-bits"],
)
def test_invalid_config(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert assert_fails(run("--config.file=" + path)) == "%s: %s" % (path, expected)


@pytest.mark.parametrize("address", ["nonsense", "9779", ":0", ":70000", "host:", ":²"])
def test_bad_listen_address(address):
    message = assert_fails(run("--config.file=" + EXAMPLE, "--web.listen-address=" + address))
    assert message == "--web.listen-address %r is not host:port: use e.g. :9779 or 127.0.0.1:9779" % address


@pytest.mark.parametrize("path", ["metrics", "/"])
def test_bad_telemetry_path(path):
    message = assert_fails(run("--config.file=" + EXAMPLE, "--web.telemetry-path=" + path))
    assert message == "--web.telemetry-path %r must start with / and not be / itself, e.g. /metrics" % path


def test_config_check():
    proc = run("--config.check", "--config.file=" + EXAMPLE)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "errnomon: config %s is valid\n" % EXAMPLE, "")


def test_config_check_reports_errors(tmp_path):
    path = write(tmp_path, "series: {budget: 0}\n")
    message = assert_fails(run("--config.check", "--config.file=" + path))
    assert message == "%s: series.budget: must be between 1 and 1000000, got 0" % path


def test_help():
    proc = run("--help")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "examples:" in proc.stdout
    for flag in FLAGS:
        assert flag in proc.stdout, flag
    assert "--ebpf" not in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag: see 'errnomon --help'"),
    (["--log.level=loud"], "argument --log.level: invalid choice: 'loud' (choose from 'debug', 'info', 'warn', "
                           "'error'): see 'errnomon --help'"),
    (["--config.file"], "argument --config.file: expected one argument: see 'errnomon --help'"),
    (["--x\x1b[2J"], "unrecognized arguments: --x\\x1b[2J: see 'errnomon --help'"),
    (["top", "--interval=soon"], "argument --interval: invalid float value: 'soon': see 'errnomon top --help'"),
    (["top", "--bogus"], "unrecognized arguments: --bogus: see 'errnomon top --help'"),
])
def test_usage_errors_are_one_line(args, expected):
    assert assert_fails(run(*args)) == expected


@pytest.mark.parametrize("path, bad", [("/metrics?x=1", "?"), ("/metrics#top", "#"), ("/met rics", " "),
                                       ("/m%41", "%"), ("/m\x07", "\x07")])
def test_telemetry_path_with_query_or_fragment(path, bad):
    message = assert_fails(run("--config.file=" + EXAMPLE, "--web.telemetry-path=" + path))
    assert message == ("--web.telemetry-path %r contains %r: the path cannot hold ?, #, %%, spaces or control "
                       "characters (a query or fragment is never part of the path): use e.g. /metrics"
                       % (path, bad)).replace("\x07", "\\x07")


def test_bpf_dir_pointing_nowhere(tmp_path):
    env = dict(os.environ, ERRNOMON_BPF_DIR=str(tmp_path / "nowhere"))
    message = assert_fails(run("--config.file=" + EXAMPLE, "--web.listen-address=127.0.0.1:%d" % free_port(),
                               env=env))
    assert message == ("ERRNOMON_BPF_DIR=%s has no errnomon.h: point it at errnomon's bpf/ directory "
                       "(scripts/install.sh copies it) or unset it" % (tmp_path / "nowhere"))
    # --config.check needs no BPF sources
    proc = run("--config.check", "--config.file=" + EXAMPLE, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("url, expected", [
    ("http://[::1", "--url 'http://[::1' is not a URL (Invalid IPv6 URL): use e.g. http://127.0.0.1:9779/metrics"),
    ("http://[::1]:99999/metrics", "--url 'http://[::1]:99999/metrics' is not a URL (Port out of range "
                                   "0-65535): use e.g. http://127.0.0.1:9779/metrics"),
    ("localhost:abc", "--url 'http://localhost:abc/metrics' is not a URL (Port could not be cast to integer "
                      "value as 'abc'): use e.g. http://127.0.0.1:9779/metrics"),
    ("ftp://x/metrics", "--url 'ftp://x/metrics' is not an http:// or https:// URL with a host: use e.g. "
                        "http://127.0.0.1:9779/metrics"),
    ("http://", "--url 'http:///metrics' is not an http:// or https:// URL with a host: use e.g. "
                "http://127.0.0.1:9779/metrics"),
    ("http://a\x01b/", "--url 'http://a\\x01b/metrics' holds spaces or control characters: use e.g. "
                       "http://127.0.0.1:9779/metrics"),
])
def test_top_bad_url(url, expected):
    assert assert_fails(run("top", "--once", "--interval=0.1", "--url", url)) == expected


# ---------------------------------------------------------------------------
# hostile config files at start-up: one line, exit 2, before anything is loaded (no root needed)

from tests.unit.test_config import HOSTILE  # noqa: E402  (the same inputs the reload test sends)


@pytest.mark.parametrize("text, expected", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_config_at_start_up(tmp_path, text, expected):
    path = write(tmp_path, text)
    message = assert_fails(run("--config.file=" + path, "--web.listen-address=127.0.0.1:%d" % free_port()))
    assert message == expected.replace("config.yaml: ", path + ": ", 1)


def test_fifo_dev_zero_and_oversize_at_start_up(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    for path, what in ((fifo, "it is a FIFO, not a regular file: point --config.file at a YAML file"),
                       ("/dev/zero", "it is a character device, not a regular file: point --config.file at "
                                     "a YAML file"),
                       (big, "%d bytes is over the 1024 KiB limit: a config needs a few KiB; check --config.file"
                             % (2 << 20))):
        message = assert_fails(run("--config.file=%s" % path, "--web.listen-address=127.0.0.1:%d" % free_port()))
        assert message == "%s: cannot read config file: %s" % (path, what)


# ---------------------------------------------------------------------------
# without privileges

def unprivileged():
    """How to run the CLI without BPF privileges: (preexec_fn, description), or None if impossible here."""
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            return None

        def drop():
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
        probe = subprocess.run([sys.executable, "-c", "import os; print(os.geteuid())"], preexec_fn=drop,
                               capture_output=True, text=True, cwd=REPO_ROOT)
        if probe.returncode != 0 or probe.stdout.strip() != str(nobody.pw_uid):
            return None
        return drop
    try:
        loader.check_privileges()
    except loader.LoadError:
        return lambda: None  # already unprivileged: run as we are
    return None  # a non-root user holding CAP_BPF/CAP_SYS_ADMIN: cannot drop them portably


@pytest.mark.parametrize("log_level", ["info", "error"])
def test_not_root(log_level):
    preexec = unprivileged()
    assert preexec is not None, "cannot drop BPF privileges here: run the tests as root or as a plain user"
    proc = run("--config.file=" + EXAMPLE, "--web.listen-address=127.0.0.1:%d" % free_port(),
               "--log.level=" + log_level, preexec_fn=preexec)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # checked before anything is logged
    assert lines[0] == ("errnomon: error: loading BPF programs needs root, or CAP_BPF and CAP_PERFMON (plus "
                        "CAP_DAC_READ_SEARCH when not uid 0): run as root (sudo) or grant them (AmbientCapabilities= "
                        "in the systemd unit)")


CAP = {"SYS_ADMIN": 1 << 21, "PERFMON": 1 << 38, "BPF": 1 << 39}
ALL_CAPS = (1 << 41) - 1


@pytest.mark.parametrize(
    "caps, allowed",
    [
        (0, False),
        (CAP["SYS_ADMIN"], True),
        (CAP["BPF"] | CAP["PERFMON"], True),
        (CAP["BPF"], False),
        (CAP["PERFMON"], False),
        (ALL_CAPS, True),
        (ALL_CAPS & ~CAP["SYS_ADMIN"] & ~CAP["BPF"], False),
        (ALL_CAPS & ~CAP["SYS_ADMIN"] & ~CAP["PERFMON"], False),
        (ALL_CAPS & ~CAP["SYS_ADMIN"], True),
    ],
    ids=["none", "sys_admin", "bpf+perfmon", "bpf", "perfmon", "root", "no-sys_admin-no-bpf",
         "no-sys_admin-no-perfmon", "no-sys_admin"],
)
def test_check_privileges(monkeypatch, caps, allowed):
    monkeypatch.setattr(loader, "effective_capabilities", lambda: caps)
    if allowed:
        assert loader.check_privileges() is None
    else:
        with pytest.raises(loader.LoadError) as info:
            loader.check_privileges()
        assert "root" in str(info.value) and "CAP_BPF" in str(info.value)


def test_effective_capabilities_reads_proc():
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("CapEff:"))
    assert loader.effective_capabilities() == int(line.split()[1], 16)


def test_listen_address_in_use():
    """As root the privilege check passes, so this reaches the bind, which comes before loading anything."""
    if os.geteuid() != 0:
        pytest.fail("run as root (make test does) to get past the privilege check")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = "127.0.0.1:%d" % busy.getsockname()[1]
        message = assert_fails(run("--config.file=" + EXAMPLE, "--web.listen-address=" + address))
    assert message == "cannot listen on %s: Address already in use: pick a free address with " \
                      "--web.listen-address" % address
