"""monitor/cgroups.py: the cgroup2 mount from mountinfo, and cgroup id -> unit on this very host."""

import os
import signal
import time

import pytest

from monitor import cgroups
from monitor.cgroups import UnitResolver, cgroup2_mount, unit_name

TAG = os.environ.get("ERRNOMON_TEST_TAG", "")

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_ONLY = HYBRID.splitlines(True)[:3]
ELSEWHERE = ("50 23 0:40 /sub /mnt/bind rw - cgroup2 cgroup2 rw\n"
             "51 23 0:40 / /run/my\\040cgroup rw - cgroup2 cgroup2 rw\n")


@pytest.mark.parametrize("text, expected", [
    (HYBRID, "/sys/fs/cgroup/unified"),
    (UNIFIED, "/sys/fs/cgroup"),
    ("".join(V1_ONLY), None),
    (ELSEWHERE, "/run/my cgroup"),  # a bind mount of a sub-tree is not the hierarchy's root
    ("", None),
])
def test_cgroup2_mount(tmp_path, text, expected):
    path = tmp_path / "mountinfo"
    path.write_text(text)
    assert cgroup2_mount(str(path)) == expected


def test_unit_name():
    assert unit_name("/system.slice/nginx.service") == "nginx.service"
    assert unit_name("/") == "/"
    assert unit_name("/a/b/") == "b"


def test_v1_only_host_reads_the_systemd_hierarchy(tmp_path):
    (tmp_path / "mountinfo").write_text("".join(V1_ONLY))
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(
        "9:name=systemd:/system.slice/nginx.service\n1:cpu:/\n0::/\n")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("9:name=systemd:/\n1:cpu:/\n")
    r = UnitResolver(mountinfo=str(tmp_path / "mountinfo"), proc=str(tmp_path))
    assert r.root is None
    assert r(1, 4242) == "nginx.service"
    assert r(1, 7) == "/"
    assert r(1, 99999) == ""  # gone
    assert r(1, 0) == ""


def this_hosts_cgroup2():
    root = cgroup2_mount()
    assert root, "no cgroup2 mount in /proc/self/mountinfo: errnomon's unit label needs cgroup v2"
    assert os.geteuid() == 0, "creating a cgroup needs root: run 'sudo make test'"
    return root


def park_child_in(procs_file):
    """A child process moved into the cgroup whose cgroup.procs is `procs_file`; it sleeps until killed.
    Returns its pid and its cgroup v2 path as the kernel reports it (/proc/<pid>/cgroup, the '0::' line)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))
            os.write(w, b"1")
        finally:
            os.close(w)
        time.sleep(60)
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    with open("/proc/%d/cgroup" % pid) as f:
        path = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")][0]
    return pid, path


def test_real_cgroup_and_root_cgroup_on_this_host():
    root = this_hosts_cgroup2()
    name = "%serrnomon-unit-test.scope" % TAG
    cg = os.path.join(root, name)
    os.mkdir(cg)
    pids = []
    try:
        pid, path = park_child_in(os.path.join(cg, "cgroup.procs"))
        pids.append(pid)
        assert path == "/" + name  # the kernel's view, independent of errnomon
        pid_root, path_root = park_child_in(os.path.join(root, "cgroup.procs"))
        pids.append(pid_root)
        assert path_root == "/"
        resolver = UnitResolver()
        assert resolver.root == root
        # the cgroup id BPF reports is the inode of the cgroup's directory in the cgroup2 mount
        assert resolver(os.stat(cg).st_ino, pid) == name
        assert resolver(os.stat(root).st_ino, pid_root) == "/"  # not "cpu", "memory", ...: v1 is not searched
        assert resolver(0, pid) == ""
    finally:
        for p in pids:
            os.kill(p, signal.SIGKILL)
            os.waitpid(p, 0)
        os.rmdir(cg)
