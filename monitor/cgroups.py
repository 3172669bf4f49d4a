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
