"""monitor/pods.py: cgroup path -> container id -> (namespace, pod, container) from each runtime's files.

The layouts here are those containerd 1.6, CRI-O, podman 4 and docker write; tests/bpf/test_containers.py
checks containerd and podman themselves."""

import json
import os

import pytest

from monitor import pods

CID = "9b6e3b8faf3dc6bd2a258399f039ba7c614521ba155e914bcfdf29dc51805cd1"
OTHER = "0" * 64


@pytest.mark.parametrize("path, expected", [
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f.slice/cri-containerd-%s.scope" % CID, CID),
    ("/kubepods/besteffort/pod1f/%s" % CID, CID),
    ("/kubepods.slice/kubepods-pod1f.slice/crio-%s.scope" % CID, CID),
    ("/system.slice/docker-%s.scope" % CID, CID),
    ("/libpod_parent/libpod-%s" % CID, CID),
    ("/machine.slice/libpod-%s.scope/container" % CID, CID),  # podman's nested cgroup for the payload
    ("/k8s.io/%s" % CID, CID),
    ("/kubepods.slice/kubepods-pod1f.slice/crio-conmon-%s.scope" % CID, None),
    ("/system.slice/nginx.service", None),
    ("/", None),
    ("/k8s.io/%s" % CID[:63], None),
])
def test_container_id(path, expected):
    assert pods.container_id(path) == expected


@pytest.mark.parametrize("annotations, name, expected", [
    ({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-namespace": "shop",
      "io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.container-name": "nginx"}, "", ("shop", "web-0", "nginx")),
    ({"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-namespace": "shop",
      "io.kubernetes.cri.sandbox-name": "web-0"}, "", ("shop", "web-0", "")),
    ({"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "web-0",
      "io.kubernetes.container.name": "nginx"}, "k8s_nginx_web-0", ("shop", "web-0", "nginx")),
    ({"io.container.manager": "libpod"}, "db", ("", "", "db")),
    ({}, "", ("", "", "")),
])
def test_identity(annotations, name, expected):
    assert pods.identity(annotations, name) == expected


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def k8s(namespace, pod, container):
    return {"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": pod,
            "io.kubernetes.container.name": container}


def test_runtimes_lookup(tmp_path):
    write_json(tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / CID / "config.json",
               {"annotations": {"io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.sandbox-name": "web-0",
                                "io.kubernetes.cri.container-name": "nginx"}})
    crio = "1" * 64
    write_json(tmp_path / "run/containers/storage/overlay-containers" / crio / "userdata/config.json",
               {"annotations": k8s("kube-system", "dns-1", "coredns")})
    podman = "2" * 64
    write_json(tmp_path / "var/lib/containers/storage/overlay-containers" / podman / "userdata/config.json",
               {"annotations": {"io.container.manager": "libpod"}})
    write_json(tmp_path / "var/lib/containers/storage/overlay-containers/containers.json",
               [{"id": podman, "names": ["db"]}, {"id": "3" * 64, "names": ["other"]}])
    docker = "4" * 64
    write_json(tmp_path / "var/lib/docker/containers" / docker / "config.v2.json",
               {"Name": "/cache", "Config": {"Labels": {"maintainer": "x"}}})
    runtimes = pods.Runtimes(str(tmp_path))
    assert runtimes.lookup(CID) == ("shop", "web-0", "nginx")
    assert runtimes.lookup(crio) == ("kube-system", "dns-1", "coredns")
    assert runtimes.lookup(podman) == ("", "", "db")
    assert runtimes.lookup(docker) == ("", "", "cache")
    assert runtimes.lookup(OTHER) is None


def test_cgroup2_mounts(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n")
    assert pods.cgroup2_mounts(str(info)) == ["/sys/fs/cgroup/unified"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def node(tmp_path):
    """A cgroup tree (plain directories: their inodes stand in for cgroup ids) and a containerd state dir."""
    cgroups = tmp_path / "cgroup"
    (cgroups / "system.slice/nginx.service").mkdir(parents=True)
    (cgroups / "k8s.io" / CID).mkdir(parents=True)
    host = tmp_path / "host"
    write_json(host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / CID / "config.json",
               {"annotations": k8s("shop", "web-0", "nginx")})
    clock = Clock()
    resolver = pods.PodResolver(str(host), cgroup_roots=[str(cgroups)], cache_size=3, rescan_every=2.0, clock=clock)
    return cgroups, host, clock, resolver


def ino(path):
    return os.stat(path).st_ino


def test_resolver(node):
    cgroups, host, clock, resolver = node
    container, service = ino(cgroups / "k8s.io" / CID), ino(cgroups / "system.slice/nginx.service")
    assert resolver.get(container) == ("", "", "")  # get() never reads files
    resolver.prepare({container, service, 0})
    assert resolver.get(container) == ("shop", "web-0", "nginx")
    assert resolver.get(service) == ("", "", "")
    assert resolver.get(0) == ("", "", "")


def test_new_cgroup_rescans_at_once(node):
    cgroups, host, clock, resolver = node
    resolver.prepare({ino(cgroups / "k8s.io" / CID)})
    new = "5" * 64
    (cgroups / "k8s.io" / new).mkdir()
    write_json(host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / new / "config.json",
               {"annotations": k8s("shop", "web-1", "nginx")})
    new_id = ino(cgroups / "k8s.io" / new)
    resolver.prepare({new_id})
    assert resolver.get(new_id) == ("shop", "web-1", "nginx")


def test_unresolved_cgroup_is_not_rescanned_before_the_interval(node):
    cgroups, host, clock, resolver = node
    scans = []
    real_scan = resolver._scan
    resolver._scan = lambda now: (scans.append(now), real_scan(now))
    resolver.prepare({12345678})  # no such cgroup (any more)
    resolver.prepare({12345678})
    clock.now += 1.0
    resolver.prepare({12345678})
    assert scans == [100.0]
    clock.now += 1.0
    resolver.prepare({12345678})
    assert scans == [100.0, 102.0]
    assert resolver.get(12345678) == ("", "", "")


def test_container_files_written_late_are_retried(node):
    cgroups, host, clock, resolver = node
    late = "6" * 64
    (cgroups / "k8s.io" / late).mkdir()
    late_id = ino(cgroups / "k8s.io" / late)
    resolver.prepare({late_id})
    assert resolver.get(late_id) == ("", "", "")
    write_json(host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / late / "config.json",
               {"annotations": k8s("shop", "late-0", "app")})
    resolver.prepare({late_id})  # not before the retry time
    assert resolver.get(late_id) == ("", "", "")
    clock.now += 2.0
    resolver.prepare({late_id})
    assert resolver.get(late_id) == ("shop", "late-0", "app")


def test_cache_is_bounded(node):
    cgroups, host, clock, resolver = node
    ids = []
    for i in range(5):
        cid = "%x" % (7 + i) * 64
        (cgroups / "k8s.io" / cid).mkdir()
        write_json(host / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid / "config.json",
                   {"annotations": k8s("ns", "pod-%d" % i, "c")})
        ids.append(ino(cgroups / "k8s.io" / cid))
    for i in ids:
        resolver.prepare({i})
    assert len(resolver.cache) == 3
    assert [resolver.get(i)[1] for i in ids] == ["", "", "pod-2", "pod-3", "pod-4"]


def test_configure_clears_the_cache(node, tmp_path):
    cgroups, host, clock, resolver = node
    container = ino(cgroups / "k8s.io" / CID)
    resolver.prepare({container})
    resolver.configure(str(tmp_path / "elsewhere"))
    assert resolver.get(container) == ("", "", "")
    resolver.prepare({container})
    assert resolver.get(container) == ("", "", "")
