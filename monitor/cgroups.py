"""cgroup v2 id -> systemd unit or container name, for the opt-in unit label."""

import os
import re
import threading
import time

CGROUP_ROOT = "/sys/fs/cgroup"


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
    """The last component of a cgroup path: nginx.service, docker-<id>.scope, cri-containerd-<id>.scope."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name or "/"


class UnitResolver:
    """Resolves by the cgroup directory's inode, which is the cgroup id on cgroup v2. Only the v2 hierarchy
    is walked: on a hybrid host the v1 hierarchies beside it number their directories independently."""

    def __init__(self, root=None, rescan_every=5.0):
        self.root = root or cgroup2_mount() or CGROUP_ROOT
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
