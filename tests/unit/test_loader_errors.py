"""Each thing that stops the programs from loading is one LoadError line naming the fix."""

import builtins
import subprocess

import pytest

from monitor import loader


def test_bcc_missing(monkeypatch):
    real_import = builtins.__import__

    def no_bcc(name, *args, **kwargs):
        if name == "bcc":
            raise ImportError("No module named 'bcc'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_bcc)
    with pytest.raises(loader.LoadError) as e:
        loader.import_bcc()
    assert "apt-get install python3-bpfcc" in str(e.value)
    assert "--system-site-packages" in str(e.value)


def test_headers_missing(monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(loader.platform, "release", lambda: "0.0.0-errnomon-test")
    monkeypatch.setattr(loader.os.path, "exists", lambda p: False)
    with pytest.raises(loader.LoadError) as e:
        loader.check_headers()
    assert str(e.value) == ("no kernel headers bcc can use at /lib/modules/0.0.0-errnomon-test/build, nor "
                            "/sys/kernel/kheaders.tar.xz: install linux-headers-0.0.0-errnomon-test, or run "
                            "'make setup', which links the distribution's generic headers there; in a container, "
                            "mount the host's /lib/modules and /usr/src read-only")


def test_headers_link_dangles(monkeypatch, tmp_path):
    """The host's /lib/modules mounted in a container without the /usr/src its build link points into."""
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(loader.platform, "release", lambda: "6.18.0-test")
    monkeypatch.setattr(loader, "MODULES_DIR", str(tmp_path))
    monkeypatch.setattr(loader, "KHEADERS", str(tmp_path / "no-kheaders.tar.xz"))
    (tmp_path / "6.18.0-test").mkdir()
    (tmp_path / "6.18.0-test" / "build").symlink_to("/usr/src/linux-headers-0.0.0-errnomon-test-amd64")
    with pytest.raises(loader.LoadError) as e:
        loader.check_headers()
    assert str(e.value) == ("%s/6.18.0-test/build links to /usr/src/linux-headers-0.0.0-errnomon-test-amd64, which "
                            "is not here: mount the host's /usr/src read-only as well as /lib/modules" % tmp_path)


def test_headers_found_through_link(monkeypatch, tmp_path):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(loader.platform, "release", lambda: "6.18.0-test")
    monkeypatch.setattr(loader, "MODULES_DIR", str(tmp_path / "modules"))
    monkeypatch.setattr(loader, "KHEADERS", str(tmp_path / "no-kheaders.tar.xz"))
    (tmp_path / "src" / "include").mkdir(parents=True)
    (tmp_path / "modules" / "6.18.0-test").mkdir(parents=True)
    (tmp_path / "modules" / "6.18.0-test" / "build").symlink_to(tmp_path / "src")
    loader.check_headers()


def test_tracefs_not_mountable(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "TRACEFS_CANDIDATES", (str(tmp_path / "tracing"), str(tmp_path / "debug")))

    def mount_fails(*args, **kwargs):
        raise subprocess.CalledProcessError(32, args[0], stderr=b"mount: permission denied")
    monkeypatch.setattr(loader.subprocess, "run", mount_fails)
    with pytest.raises(loader.LoadError) as e:
        loader.find_tracefs()
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("tracefs is not mounted at /sys/kernel/tracing and mounting it failed")
    assert message.endswith("mount -t tracefs nodev /sys/kernel/tracing")


def test_tracefs_found(monkeypatch, tmp_path):
    (tmp_path / "debug" / "events").mkdir(parents=True)
    monkeypatch.setattr(loader, "TRACEFS_CANDIDATES", (str(tmp_path / "tracing"), str(tmp_path / "debug")))
    assert loader.find_tracefs() == str(tmp_path / "debug")


def test_compile_flags():
    formats = {"tcp:tcp_send_reset": "\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n"}
    flags = loader.compile_flags({"sock:sock_send_length", "tcp:tcp_send_reset"}, formats, 1024, 4096)
    assert "-DMAP_SIZE=1024" in flags and "-DMAX_SOCKETS=4096" in flags
    assert "-DHAVE_sock__sock_send_length" in flags and "-DHAVE_tcp__tcp_send_reset" in flags
    assert "-DHAVE_TCP_SEND_RESET_REASON" in flags
    assert "-DHAVE_sock__sock_recv_length" not in flags
    assert "-DHAVE_TCP_SEND_RESET_REASON" not in loader.compile_flags(set(), {}, 1024, 4096)
