"""cgroup id -> (namespace, pod, container), for the opt-in pod labels, from what the container runtime keeps
on the node: no API server, no runtime socket.

cgroup id (the cgroup v2 directory's inode) -> cgroup path -> container id (the 64-hex component that
containerd, CRI-O, docker and podman name a container's cgroup after) -> the container's OCI spec that the
runtime wrote to disk, whose annotations carry the names kubelet gave it:

  containerd  <host>/run/containerd/io.containerd.runtime.v2.task/<ns>/<id>/config.json
  CRI-O       <host>/run/containers/storage/overlay-containers/<id>/userdata/config.json
  podman      <host>/var/lib/containers/storage/overlay-containers/<id>/userdata/config.json (name: containers.json)
  docker      <host>/var/lib/docker/containers/<id>/config.v2.json

Lookups are file reads outside the aggregator's lock (prepare(), called by the drain step); the aggregator
reads only the cache (get()). A container id's identity never changes, so a cached answer stays right. A
container's cgroup must still exist when its errors are drained (within a drain interval or two): errors of a
container that exited before are labelled "".
"""

import glob
import json
import os
import re
import threading
import time
from collections import OrderedDict

UNKNOWN = ("", "", "")
CONTAINER_ID = re.compile(r"^(?:cri-containerd-|crio-|docker-|libpod-)?([0-9a-f]{64})(?:\.scope)?$")

# (namespace, pod, container) annotation keys, in the order they are tried: what containerd's CRI plugin
# writes, then the CRI labels kubelet stamps on every container (CRI-O and docker keep them as annotations or
# labels; 'ctr run --label' writes them as annotations too).
KUBERNETES_KEYS = (
    ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.container-name"),
    ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.container.name"),
)
STORAGE_DIRS = ("run/containers/storage", "var/lib/containers/storage")  # CRI-O's run root, podman's root


def cgroup2_mounts(mountinfo="/proc/self/mountinfo"):
    """Mount points of the cgroup v2 hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts."""
    points = []
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    points.append(fields[4].replace("\\040", " "))
    except (OSError, ValueError, IndexError):
        pass
    return points


def container_id(path):
    """The container id in a cgroup path, the component nearest the leaf that names one; None if none does."""
    for part in reversed(path.split("/")):
        m = CONTAINER_ID.match(part)
        if m:
            return m.group(1)
    return None


def identity(annotations, name=""):
    """(namespace, pod, container) from a container's annotations or labels; a plain container: ("", "", name)."""
    for keys in KUBERNETES_KEYS:
        if annotations.get(keys[1]):
            return tuple(str(annotations.get(k) or "") for k in keys)
    return ("", "", name)


def _read_json(path):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Runtimes:
    """The container runtimes' files under one host root (the host's / as mounted where errnomon runs)."""

    def __init__(self, host_root="/"):
        self.host_root = host_root
        self._names = {}  # containers.json path -> (mtime, {id: name})

    def path(self, *parts):
        return os.path.join(self.host_root, *parts)

    def lookup(self, cid):
        """(namespace, pod, container) of a container id, or None if no runtime here knows it."""
        for spec_path in glob.glob(self.path("run/containerd/io.containerd.runtime.v2.task", "*", cid, "config.json")):
            spec = _read_json(spec_path)
            if spec is not None:
                return identity(spec.get("annotations") or {})
        for storage in STORAGE_DIRS:
            spec = _read_json(self.path(storage, "overlay-containers", cid, "userdata", "config.json"))
            if spec is not None:
                return identity(spec.get("annotations") or {}, self._storage_name(cid))
        docker = _read_json(self.path("var/lib/docker/containers", cid, "config.v2.json"))
        if docker is not None:
            return identity((docker.get("Config") or {}).get("Labels") or {}, str(docker.get("Name") or "").lstrip("/"))
        return None

    def _storage_name(self, cid):
        """A podman container's name, from containers/storage's container list (re-read when it changes)."""
        for storage in STORAGE_DIRS:
            listing = self.path(storage, "overlay-containers", "containers.json")
            try:
                mtime = os.stat(listing).st_mtime_ns
            except OSError:
                continue
            cached = self._names.get(listing)
            if cached is None or cached[0] != mtime:
                names = {}
                for c in _read_json(listing) or ():
                    if isinstance(c, dict) and c.get("names"):
                        names[c.get("id")] = str(c["names"][0])
                cached = self._names[listing] = (mtime, names)
            if cid in cached[1]:
                return cached[1][cid]
        return ""


class PodResolver:
    """cgroup id -> (namespace, pod, container). prepare() may read files; get() only reads the cache."""

    def __init__(self, host_root="/", cgroup_roots=None, cache_size=4096, rescan_every=2.0, clock=time.monotonic):
        self.runtimes = Runtimes(host_root)
        self.cgroup_roots = cgroup_roots
        self.cache_size = cache_size
        self.rescan_every = rescan_every
        self.clock = clock
        self.cache = OrderedDict()  # cgroup id -> (namespace, pod, container); bounded, least recently used out
        self.retry = {}             # unresolved cgroup id -> when it is looked up again
        self.paths = {}             # cgroup id -> cgroup path, from the last scan
        self.lock = threading.Lock()

    def configure(self, host_root):
        with self.lock:
            if host_root != self.runtimes.host_root:
                self.runtimes = Runtimes(host_root)
                self.cache.clear()
                self.retry.clear()

    def get(self, cgroup_id):
        found = self.cache.get(cgroup_id)
        return found if found is not None else UNKNOWN

    def prepare(self, cgroup_ids):
        """Resolve the ids not cached yet. Called from the drain step, never under the aggregator's lock.

        A cgroup id never seen before rescans the cgroup tree at once (one walk per call at most), so a
        container's first errors carry its labels; an id that still resolves to nothing (its cgroup is already
        gone, or the runtime has not written its files yet) is looked at again only after rescan_every."""
        with self.lock:
            now = self.clock()
            todo = []
            for cgroup_id in cgroup_ids:
                if not cgroup_id:
                    continue
                if cgroup_id in self.cache:
                    self.cache.move_to_end(cgroup_id)
                elif self.retry.get(cgroup_id, now) <= now:
                    todo.append(cgroup_id)
            if any(cgroup_id not in self.paths for cgroup_id in todo):
                self._scan(now)
            for cgroup_id in todo:
                found = self._resolve(cgroup_id)
                if found is None:
                    if len(self.retry) >= self.cache_size:
                        self.retry.clear()
                    self.retry[cgroup_id] = now + self.rescan_every
                    continue
                self.retry.pop(cgroup_id, None)
                self.cache[cgroup_id] = found
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)

    def _resolve(self, cgroup_id):
        """The identity, UNKNOWN for a cgroup that is no container's, None when it may be known later."""
        path = self.paths.get(cgroup_id)
        if path is None:
            return None
        cid = container_id(path)
        if cid is None:
            return UNKNOWN
        return self.runtimes.lookup(cid)

    def _scan(self, now):
        paths = {}
        roots = self.cgroup_roots if self.cgroup_roots is not None else cgroup2_mounts()
        for root in roots:
            for dirpath, _, _ in os.walk(root):
                try:
                    paths[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, root).lstrip(".")
                except OSError:
                    continue
        self.paths = paths
