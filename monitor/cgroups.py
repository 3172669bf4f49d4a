"""cgroup v2 id -> systemd unit or container name, for the opt-in unit label."""

import os
import threading
import time

CGROUP_ROOT = "/sys/fs/cgroup"


def unit_name(path):
    """The last component of a cgroup path: nginx.service, docker-<id>.scope, cri-containerd-<id>.scope."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name or "/"


class UnitResolver:
    """Resolves by the cgroup directory's inode, which is the cgroup id on cgroup v2."""

    def __init__(self, root=CGROUP_ROOT, rescan_every=5.0):
        self.root = root
        self.rescan_every = rescan_every
        self.ids = {}
        self.scanned = 0.0
        self.lock = threading.Lock()

    def _scan(self):
        ids = {}
        for dirpath, dirnames, _ in os.walk(self.root):
            try:
                ids[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, self.root).lstrip(".")
            except OSError:
                continue
        self.ids = ids
        self.scanned = time.monotonic()

    def __call__(self, cgroup_id):
        if not cgroup_id:
            return ""
        with self.lock:
            path = self.ids.get(cgroup_id)
            if path is None and time.monotonic() - self.scanned > self.rescan_every:
                self._scan()
                path = self.ids.get(cgroup_id)
        return unit_name(path) if path else ""


def cgroup2_mount(mountinfo="/proc/self/mountinfo"):
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    return fields[4]
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_id_of_pid(pid, mount=None, proc="/proc"):
    """A process's cgroup v2 id (what bpf_get_current_cgroup_id() returns for it), or 0."""
    mount = mount or cgroup2_mount()
    if not mount:
        return 0
    try:
        with open("%s/%d/cgroup" % (proc, pid)) as f:
            for line in f:
                if line.startswith("0::"):
                    return os.stat(mount + line[3:].rstrip("\n")).st_ino
    except OSError:
        pass
    return 0
