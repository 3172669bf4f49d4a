"""cgroup id -> systemd unit or container name, for the opt-in unit label.

The BPF programs record bpf_get_current_cgroup_id(): the id of the task's cgroup in the cgroup v2 (unified)
hierarchy, which is the inode number of that cgroup's directory in a cgroup2 mount. Only a cgroup2 mount
may be searched: on a hybrid host (v1 controllers and v2 both mounted, e.g. v2 at /sys/fs/cgroup/unified)
the v1 hierarchies and the tmpfs above them reuse the same small inode numbers (the root of every one is
1), so searching them gave processes in the root cgroup unit="cpu". The cgroup2 mount is found in
/proc/self/mountinfo, wherever it is.

On a v1-only host (no cgroup2 mounted) every task's v2 cgroup is the root, so the id says nothing; the unit
is then read from the task's systemd (name=systemd) v1 cgroup in /proc/<pid>/cgroup.
"""

import os
import re
import threading
import time

MOUNTINFO = "/proc/self/mountinfo"
PROC = "/proc"
ROOT = "/"  # the label of the root cgroup


def cgroup2_mount(mountinfo="/proc/self/mountinfo"):
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
    host), or None. Its directories' inodes are the ids bpf_get_current_cgroup_id() returns."""
    try:
        with open(mountinfo) as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # mount id, parent, dev, root, mount point, options, optional fields..., "-", fs type, source, ...
        if "-" in fields:
            sep = fields.index("-")
            if sep + 1 < len(fields) and fields[sep + 1] == "cgroup2" and fields[3] == "/":
                return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040: space
    return None


def unit_name(path):
    """The last component of a cgroup path: nginx.service, docker-<id>.scope, cri-containerd-<id>.scope;
    "/" for the root cgroup."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name or ROOT


def _unescape(field):
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cgroup2_mount(mountinfo=MOUNTINFO):
    """The mount point of the cgroup v2 hierarchy (its root mounted, /sys/fs/cgroup preferred), or None."""
    found = []
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if "-" not in fields:
                    continue
                sep = fields.index("-")
                if sep + 1 < len(fields) and fields[sep + 1] == "cgroup2" and fields[3] == "/":
                    found.append(_unescape(fields[4]))
    except OSError:
        return None
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in found:
            return preferred
    return found[0] if found else None


def v1_systemd_path(pid, proc=PROC):
    """The task's cgroup path in the v1 name=systemd hierarchy (or its v2 line), or None."""
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path
    return paths.get("name=systemd") or paths.get("")


class UnitResolver:
    """Resolves a cgroup v2 id by the inode of the cgroup's directory under the cgroup2 mount."""

    def __init__(self, root=None, rescan_every=5.0, mountinfo=MOUNTINFO, proc=PROC):
        self.root = root if root is not None else cgroup2_mount(mountinfo)
        self.proc = proc
        self.rescan_every = rescan_every
        self.ids = {}
        self.pids = {}  # pid -> (unit, when read), v1-only hosts; bounded, re-read after rescan_every
        self.scanned = float("-inf")
        self.lock = threading.Lock()

    def _scan(self):
        ids = {}
        root_dev = None
        for dirpath, dirnames, _ in os.walk(self.root):
            try:
                st = os.stat(dirpath)
            except OSError:
                continue
            if root_dev is None:
                root_dev = st.st_dev
            elif st.st_dev != root_dev:  # something else mounted inside: not a cgroup
                dirnames[:] = []
                continue
            ids[st.st_ino] = "/" + os.path.relpath(dirpath, self.root).lstrip(".")
        self.ids = ids
        self.scanned = time.monotonic()

    def __call__(self, cgroup_id, pid=0):
        if self.root is None:  # no cgroup v2: the v1 systemd hierarchy by pid
            return self._by_pid(pid) if pid else ""
        if not cgroup_id:
            return ""
        with self.lock:
            path = self.ids.get(cgroup_id)
            if path is None and time.monotonic() - self.scanned > self.rescan_every:
                self._scan()
                path = self.ids.get(cgroup_id)
        return unit_name(path) if path else ""

    def _by_pid(self, pid):
        now = time.monotonic()
        with self.lock:
            known = self.pids.get(pid)
            if known is not None and now - known[1] <= self.rescan_every:
                return known[0]
            path = v1_systemd_path(pid, self.proc)
            unit = unit_name(path) if path else ""
            if len(self.pids) >= 4096:
                self.pids.clear()
            self.pids[pid] = (unit, now)
            return unit

