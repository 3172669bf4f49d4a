"""scripts/install.sh (make install / make uninstall) into temporary roots (DESTDIR).

Each install builds a real venv from /usr/bin/python3 and pip-installs errnomon into it (a few seconds).
Everything but the --ebpf test runs without root; that one needs root, bcc and tracefs (marker bpf) and
fails, rather than skips, without them.
"""

import filecmp
import os
import re
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = os.path.join(REPO, "scripts", "install.sh")
UNIT_SRC = os.path.join(REPO, "deploy", "systemd", "errnomon.service")
EXAMPLE = os.path.join(REPO, "config.example.yaml")
UNIT = "etc/systemd/system/errnomon.service"
CONF = "etc/errnomon/config.yaml"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DESTDIR", "PREFIX", "PURGE", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                        "ERRNOMON_BPF_DIR", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(extra)
    return env


def make(target, destdir, **variables):
    """`make <target> DESTDIR=<destdir> [VAR=value...]`, as a user would run it."""
    args = ["make", "-s", "-C", REPO, target, "DESTDIR=%s" % destdir]
    args += ["%s=%s" % kv for kv in variables.items()]
    proc = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (" ".join(args), proc.returncode, proc.stdout,
                                                             proc.stderr)
    return proc.stdout + proc.stderr


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def run_installed(venv, *args, **env):
    return subprocess.run([os.path.join(venv, "bin", "errnomon"), *args], env=clean_env(**env), cwd="/",
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A default install (PREFIX=/opt/errnomon) into an empty DESTDIR."""
    dest = str(tmp_path_factory.mktemp("dest"))
    out = make("install", dest)
    return dest, out


@pytest.fixture(scope="module")
def installed_over_config(tmp_path_factory):
    """An install with PREFIX=/srv/errnomon into a DESTDIR that already holds a modified config."""
    dest = str(tmp_path_factory.mktemp("dest-prefix"))
    os.makedirs(os.path.join(dest, "etc", "errnomon"))
    with open(os.path.join(dest, CONF), "w") as f:
        f.write("# the administrator's config\nseries:\n  budget: 123\n")
    os.chmod(os.path.join(dest, CONF), 0o600)
    out = make("install", dest, PREFIX="/srv/errnomon")
    return dest, out


def test_install_layout_and_modes(installed):
    dest, out = installed
    prefix = os.path.join(dest, "opt", "errnomon")
    venv = os.path.join(prefix, "venv")
    assert mode(os.path.join(dest, UNIT)) == 0o644
    assert filecmp.cmp(os.path.join(dest, UNIT), UNIT_SRC, shallow=False)
    assert mode(os.path.join(dest, CONF)) == 0o644
    assert filecmp.cmp(os.path.join(dest, CONF), EXAMPLE, shallow=False)
    assert mode(os.path.join(dest, "etc", "errnomon")) == 0o755
    for name in os.listdir(os.path.join(REPO, "bpf")):
        installed_file = os.path.join(prefix, "bpf", name)
        assert filecmp.cmp(installed_file, os.path.join(REPO, "bpf", name), shallow=False), name
        assert mode(installed_file) == 0o644
    assert os.access(os.path.join(venv, "bin", "errnomon"), os.X_OK)
    with open(os.path.join(venv, "pyvenv.cfg")) as f:
        cfg = f.read()
    assert re.search(r"^include-system-site-packages = true$", cfg, re.M), cfg
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
    assert "no systemctl daemon-reload" in out  # DESTDIR is set: systemd is left alone


def test_installed_package_is_a_copy(installed):
    """Not editable: the installed monitor package lives in the venv, not in the repository."""
    dest, _ = installed
    python = os.path.join(dest, "opt", "errnomon", "venv", "bin", "python")
    proc = subprocess.run([python, "-c", "import monitor; print(monitor.__file__)"], env=clean_env(), cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip()
    assert path.startswith(os.path.join(dest, "opt", "errnomon", "venv") + os.sep), path
    assert "site-packages" in path and not path.startswith(REPO + os.sep)


def test_installed_config_check(installed):
    dest, _ = installed
    proc = run_installed(os.path.join(dest, "opt", "errnomon", "venv"), "--config.check",
                         "--config.file=%s" % os.path.join(dest, CONF))
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout


def unit_environment(unit_path):
    with open(unit_path) as f:
        return dict(m.groups() for m in re.finditer(r"^Environment=(\w+)=(\S+)$", f.read(), re.M))


@pytest.mark.bpf
def test_installed_ebpf_finds_bpf_sources(installed):
    """--ebpf with the unit's ERRNOMON_BPF_DIR (under DESTDIR) prints the installed BPF program."""
    assert os.geteuid() == 0, "--ebpf runs errnomon's preflight, which needs root: run 'sudo make test'"
    dest, _ = installed
    bpf_dir = unit_environment(os.path.join(dest, UNIT))["ERRNOMON_BPF_DIR"]
    assert bpf_dir == "/opt/errnomon/bpf"
    proc = run_installed(os.path.join(dest, "opt", "errnomon", "venv"), "--ebpf",
                         "--config.file=%s" % os.path.join(dest, CONF), ERRNOMON_BPF_DIR=dest + bpf_dir)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(REPO, "bpf", "errnomon.bpf.c")) as f:
        source = f.read()
    first, rest = proc.stdout.split("\n", 1)
    assert first.startswith("// cflags: -I%s%s " % (dest, bpf_dir)), first
    assert rest.rstrip("\n") == source.rstrip("\n")


def test_installed_copy_takes_bpf_dir_from_environment(installed):
    """The installed copy finds its bpf/ through ERRNOMON_BPF_DIR, which the unit sets."""
    dest, _ = installed
    python = os.path.join(dest, "opt", "errnomon", "venv", "bin", "python")
    code = "from monitor import abi; print(abi.BPF_DIR)"
    bpf_dir = os.path.join(dest, "opt", "errnomon", "bpf")
    proc = subprocess.run([python, "-c", code], env=clean_env(ERRNOMON_BPF_DIR=bpf_dir), cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == bpf_dir


def test_systemd_analyze_verifies_installed_unit(installed, tmp_path):
    """systemd-analyze verify on the installed unit, its paths moved under DESTDIR so that ExecStart exists."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    dest, _ = installed
    with open(os.path.join(dest, UNIT)) as f:
        text = f.read().replace("/opt/errnomon", dest + "/opt/errnomon")
    unit = tmp_path / "errnomon.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_config_kept_and_prefix_rewritten(installed_over_config):
    dest, out = installed_over_config
    with open(os.path.join(dest, CONF)) as f:
        assert f.read() == "# the administrator's config\nseries:\n  budget: 123\n"
    assert mode(os.path.join(dest, CONF)) == 0o600
    assert "keeping %s" % os.path.join(dest, CONF) in out
    with open(os.path.join(dest, UNIT)) as f:
        unit = f.read()
    assert "/opt/errnomon" not in unit
    assert ("ExecStart=/srv/errnomon/venv/bin/errnomon --config.file=/etc/errnomon/config.yaml "
            "--web.listen-address=127.0.0.1:9779\n") in unit
    assert "Environment=ERRNOMON_BPF_DIR=/srv/errnomon/bpf\n" in unit
    assert os.access(os.path.join(dest, "srv", "errnomon", "venv", "bin", "errnomon"), os.X_OK)
    assert not os.path.exists(os.path.join(dest, "opt"))


def test_reinstall_keeps_config(installed_over_config):
    """A second install (an upgrade) replaces the venv and keeps the administrator's config."""
    dest, _ = installed_over_config
    out = make("install", dest, PREFIX="/srv/errnomon")
    assert "keeping" in out
    with open(os.path.join(dest, CONF)) as f:
        assert "budget: 123" in f.read()
    proc = run_installed(os.path.join(dest, "srv", "errnomon", "venv"), "--config.check",
                         "--config.file=%s" % os.path.join(dest, CONF))
    assert proc.returncode == 0, proc.stderr


def installed_files(dest, prefix):
    return [os.path.join(dest, UNIT), os.path.join(dest, prefix.lstrip("/"))]


def test_uninstall_removes_everything_and_unmodified_config(installed):
    dest, _ = installed
    out = make("uninstall", dest)
    for path in installed_files(dest, "/opt/errnomon") + [os.path.join(dest, CONF),
                                                          os.path.join(dest, "etc", "errnomon")]:
        assert not os.path.lexists(path), path
    assert "removed %s" % os.path.join(dest, CONF) in out
    # again: nothing left to remove is not an error
    make("uninstall", dest)


def test_uninstall_keeps_modified_config_unless_purged(installed_over_config):
    dest, _ = installed_over_config
    wants = os.path.join(dest, "etc", "systemd", "system", "multi-user.target.wants")
    os.makedirs(wants)
    os.symlink("/etc/systemd/system/errnomon.service", os.path.join(wants, "errnomon.service"))
    out = make("uninstall", dest, PREFIX="/srv/errnomon")
    for path in installed_files(dest, "/srv/errnomon") + [wants]:
        assert not os.path.lexists(path), path
    assert os.path.exists(os.path.join(dest, CONF))
    assert "kept %s: it was modified" % os.path.join(dest, CONF) in out
    make("uninstall", dest, PREFIX="/srv/errnomon", PURGE="1")
    assert not os.path.lexists(os.path.join(dest, "etc", "errnomon"))


@pytest.mark.parametrize("prefix", ["relative/path", "/", "/usr", "/opt"])
def test_refuses_dangerous_prefix(tmp_path, prefix):
    proc = subprocess.run(["bash", INSTALL, "uninstall"], env=clean_env(DESTDIR=str(tmp_path), PREFIX=prefix),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "PREFIX" in proc.stderr


def test_usage():
    proc = subprocess.run(["bash", INSTALL], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_web_config_drop_in_verifies_and_names_the_example_files(tmp_path):
    """deploy/systemd/web-config.conf over the unit: systemd-analyze reads the drop-in (from the unit path
    given in SYSTEMD_UNIT_PATH) and finds nothing wrong; its credentials are the files deploy/web-config.yml
    names, and errnomon reads that file from the credentials directory (%d)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    venv_errnomon = os.path.join(REPO, ".venv", "bin", "errnomon")
    drop_in = os.path.join(REPO, "deploy", "systemd", "web-config.conf")
    (tmp_path / "errnomon.service.d").mkdir()
    for source, target in ((UNIT_SRC, "errnomon.service"), (drop_in, "errnomon.service.d/web-config.conf")):
        with open(source) as f:
            (tmp_path / target).write_text(f.read().replace("/opt/errnomon/venv/bin/errnomon", venv_errnomon))
    proc = subprocess.run([analyze, "verify", "errnomon.service"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SYSTEMD_UNIT_PATH="%s:" % tmp_path))
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    with open(drop_in) as f:
        text = f.read()
    credentials = dict(re.findall(r"^LoadCredential=([^:\n]+):(\S+)$", text, re.M))
    assert credentials == {"web-config.yml": "/etc/errnomon/web-config.yml", "tls.crt": "/etc/errnomon/tls/tls.crt",
                           "tls.key": "/etc/errnomon/tls/tls.key", "ca.crt": "/etc/errnomon/tls/ca.crt"}
    assert " --web.config.file=%d/web-config.yml" in text and " --web.listen-address=:9779 " in text
    with open(os.path.join(REPO, "deploy", "web-config.yml")) as f:
        names = set(re.findall(r"^  \w+_file: (\S+)$", f.read(), re.M))
    assert names == set(credentials) - {"web-config.yml"}
