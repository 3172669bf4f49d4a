"""The image, run as deploy/kubernetes/daemonset.yaml runs it, counts errors made in other containers and labels
them with those containers' identities: a podman container (its name) and a pod container started by a real
containerd with the labels kubelet gives it.

The errnomon container gets exactly the DaemonSet's capabilities, seccomp profile, read-only root and hostPath
mounts (read from the manifest), under podman with runc (crun refuses this host's hybrid cgroups). The only
difference: the host network, to scrape it on 127.0.0.1 (the BPF programs see every network namespace anyway). Its
Secret errnomon-web is a directory of deploy/web-config.yml and test certificates: the scrapes are TLS with a
client certificate and basic auth, as the PodMonitor's.
The image is built once (make image) and cached by the hash of what goes into it.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.request

import pytest
import yaml

from tests.unit.tls_certs import PASSWORD, Certs, hashed

from . import scenarios
from .conftest import REPO, Daemon, _require_environment, free_port
from .test_errors import expect

pytestmark = pytest.mark.bpf

TAG = os.environ.get("ERRNOMON_TEST_TAG", "")
PREFIX = "errnomon-test" + ("-" + TAG if TAG else "")  # every container, netns and cgroup made here
IMAGE_REPO = "localhost/" + PREFIX.lower()             # image names are lower case
NETNS = PREFIX + "-net"
CGROUP_PARENT = "/" + PREFIX
RUNC = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
        "--cgroup-parent", CGROUP_PARENT]
KUBE = os.path.join(REPO, "deploy", "kubernetes")
# A 64-hex id as kubelet's containers have; the cgroup path puts it under our own parent.
CTR_ID = hashlib.sha256(PREFIX.encode()).hexdigest()

MONITOR_CONFIG = """
labels: {pod: true, pod_host_root: /host}
series: {budget: 1000000}  # the whole host is counted: other tests on it must not fold our series
kernel: {drain_interval: 500ms}
"""
# In the other containers: one reset_on_send scenario; the result on stdout, then a pause so that errnomon
# drains (and resolves the cgroup) while the container still exists.
VICTIM = """
import json, sys, time
from tests.bpf import scenarios
r = scenarios.reset_on_send(sys.argv[1], 2)
print(json.dumps({k: r[k] for k in ("errnos", "comms", "port", "remote")}), flush=True)
time.sleep(3)
"""


def run(*cmd, timeout=120, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def image_inputs():
    h = hashlib.sha256()
    paths = [os.path.join(REPO, p) for p in ("deploy/image/build.sh", "config.example.yaml")]
    for top in ("monitor", "bpf"):
        for dirpath, dirnames, files in os.walk(os.path.join(REPO, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            paths += [os.path.join(dirpath, f) for f in files if not f.endswith(".pyc")]
    for path in sorted(paths):
        h.update(os.path.relpath(path, REPO).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def image():
    """The image of this checkout: built by deploy/image/build.sh (make image) unless already built."""
    _require_environment()
    name = "%s:%s" % (IMAGE_REPO, image_inputs())
    if run("podman", "image", "exists", name, check=False).returncode != 0:
        run("bash", os.path.join(REPO, "deploy/image/build.sh"), name, timeout=1200)
        for old in run("podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO).stdout.split():
            if old != name:
                run("podman", "rmi", "-f", old, check=False)
    return name


def daemonset():
    with open(os.path.join(KUBE, "daemonset.yaml")) as f:
        return yaml.safe_load(f)["spec"]["template"]["spec"]


def podman_args(pod, config_dir, host_paths, secret_dirs=None):
    """podman run options that give the container what the DaemonSet's pod spec gives it; a Secret is the
    directory `secret_dirs` names for it."""
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    args = ["--cap-drop=all", "--cap-add=" + ",".join(c.lower() for c in security["capabilities"]["add"])]
    profile = security["seccompProfile"]
    assert profile["type"] == "Localhost"
    args += ["--security-opt", "seccomp=" + os.path.join(KUBE, os.path.basename(profile["localhostProfile"]))]
    if security["readOnlyRootFilesystem"]:
        args.append("--read-only")
    if pod.get("hostPID"):
        args.append("--pid=host")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            source = host_paths.get(volume["hostPath"]["path"], volume["hostPath"]["path"])
            args += ["-v", "%s:%s:%s" % (source, mount["mountPath"], "ro" if mount.get("readOnly") else "rw")]
        elif "configMap" in volume:
            args += ["-v", "%s:%s:ro" % (config_dir, mount["mountPath"])]
        elif "secret" in volume:
            args += ["-v", "%s:%s:ro" % ((secret_dirs or {})[volume["secret"]["secretName"]], mount["mountPath"])]
        elif "emptyDir" in volume:
            args += ["--tmpfs", mount["mountPath"]]
        else:
            raise AssertionError("volume kind not handled here: %s" % volume)
    return args, container["args"]


def web_secret(directory, certs):
    """The Secret errnomon-web as a directory: deploy/web-config.yml beside test certificates, its example user's
    hash replaced by one of PASSWORD. Returns (ssl context, headers) for a scraper with the client's side."""
    directory.mkdir()
    with open(os.path.join(REPO, "deploy", "web-config.yml")) as f:
        text = f.read()
    (directory / "web-config.yml").write_text(re.sub(r"(?m)^  prometheus: .*$", "  prometheus: " + hashed(), text))
    for source, target in (("server.crt", "tls.crt"), ("server.key", "tls.key"), ("ca.crt", "ca.crt")):
        shutil.copy(certs.path(source), directory / target)
    context = ssl.create_default_context(cafile=certs.path("ca.crt"))
    context.load_cert_chain(certs.path("client.crt"), certs.path("client.key"))
    auth = base64.b64encode(("prometheus:" + PASSWORD).encode()).decode()
    return context, {"Authorization": "Basic " + auth}


class ContainerDaemon(Daemon):
    """errnomon in the image, as the DaemonSet runs it (TLS, client certificate and basic auth included);
    scraped like the host daemon of conftest."""

    def __init__(self, tmp_path, image, host_paths):
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        (config_dir / "config.yaml").write_text(MONITOR_CONFIG)
        self.certs = Certs()
        self.ssl_context, self.headers = web_secret(tmp_path / "web", self.certs)
        args, daemon_args = podman_args(daemonset(), config_dir, host_paths, {"errnomon-web": tmp_path / "web"})
        self.port = free_port()
        self.url = "https://127.0.0.1:%d/metrics" % self.port
        self.name = PREFIX + "-errnomon"
        run("podman", "rm", "-f", self.name, check=False)
        daemon_args = [a for a in daemon_args if not a.startswith("--web.listen-address")]
        t0 = time.monotonic()
        run("podman", "run", "-d", "--name", self.name, *RUNC, *args, "--network=host", image, *daemon_args,
            "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=debug")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.state()[0] != "running":
                raise RuntimeError("errnomon exited in the container: %s\n%s" % (self.state(), self.output()))
            try:
                self.scrape()
                self.startup = time.monotonic() - t0
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("errnomon did not serve metrics within 120 s in the container:\n" + self.output())

    # It counts the whole host: with other tests' error storms running beside this one, a scrape can hold
    # 10^5 series and take seconds. Longer bounds than the host daemon's, never a timing assertion.
    def scrape_text(self):
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=120, context=self.ssl_context) as r:
            return r.read().decode()

    def wait_for(self, name, expected, timeout=8.0, **match):
        super().wait_for(name, expected, timeout=max(timeout, 90.0), **match)

    def state(self):
        out = run("podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name).stdout.split()
        return out[0], int(out[1])

    def output(self):
        r = run("podman", "logs", self.name, check=False)
        return r.stdout + r.stderr

    def stop(self, timeout=20):
        run("podman", "stop", "-t", str(timeout), self.name, check=False, timeout=timeout + 30)
        status, code = self.state()
        self.log_text = self.output()
        run("podman", "rm", "-f", self.name, check=False)
        self.certs.remove()
        return code


class Containerd:
    """A containerd of its own (config, root, state and socket in a tmp dir; a private mount namespace)."""

    def __init__(self, tmp_path):
        self.state = tmp_path / "run" / "containerd"
        self.socket = str(tmp_path / "containerd.sock")
        config = tmp_path / "containerd.toml"
        config.write_text('version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                          '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                          % (tmp_path / "root", self.state, self.socket, self.socket))
        self.log = open(tmp_path / "containerd.log", "w+")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "containerd", "--config",
                                      str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            assert self.proc.poll() is None and time.monotonic() < deadline, "containerd did not start: " + self.text()
            time.sleep(0.1)

    def text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def ctr(self, *args, timeout=60, check=True):
        return run("ctr", "--address", self.socket, "--namespace", "k8s.io", *args, timeout=timeout, check=check)

    def stop(self):
        self.ctr("tasks", "kill", "--signal", "KILL", CTR_ID, check=False)
        self.ctr("tasks", "delete", "--force", CTR_ID, check=False)
        self.ctr("containers", "delete", CTR_ID, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def remove_cgroups(name):
    """The cgroup parent podman (--cgroup-parent) and ctr (--cgroup) made for our containers, in every hierarchy."""
    root = "/sys/fs/cgroup"
    for hierarchy in os.listdir(root):
        top = os.path.join(root, hierarchy, name)
        for dirpath, dirnames, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


@pytest.fixture(scope="module")
def node(image, tmp_path_factory):
    """errnomon in its container, podman, a containerd of our own, and a network namespace with loopback up."""
    tmp = tmp_path_factory.mktemp("node")
    run("ip", "netns", "delete", NETNS, check=False)
    run("ip", "netns", "add", NETNS)
    run("ip", "-n", NETNS, "link", "set", "lo", "up")
    rootfs = run("podman", "image", "mount", image).stdout.strip()  # before containerd: it gets a private copy
    containerd = daemon = None
    try:
        containerd = Containerd(tmp)
        daemon = ContainerDaemon(tmp, image, {"/run/containerd": str(containerd.state)})
        yield daemon, containerd, rootfs
    finally:
        if daemon is not None:
            rc = daemon.stop()
            assert rc == 0, "errnomon did not exit cleanly in the container (%s):\n%s" % (rc, daemon.log_text)
        if containerd is not None:
            containerd.stop()
        run("podman", "image", "unmount", image, check=False)
        run("ip", "netns", "delete", NETNS, check=False)
        remove_cgroups(PREFIX)


def victim_result(stdout):
    r = json.loads(stdout.strip().splitlines()[-1])
    assert r["errnos"]["cli"] == ["ECONNRESET", "EPIPE"], r
    return r


def expect_reset(daemon, r, **identity):
    """The client's ECONNRESET and EPIPE on send, and the reset it received, labelled with its container."""
    cli, peer = r["comms"]["cli"], dict(remote=r["remote"], port=str(r["port"]), **identity)
    expect(daemon, cli, "errnomon_socket_errors_total",
           (dict(peer, errno="ECONNRESET", op="send"), 1), (dict(peer, errno="EPIPE", op="send"), 1))
    expect(daemon, cli, "errnomon_tcp_resets_received_total", (dict(peer, state="ESTABLISHED"), 1))


def test_podman_container_is_labelled_with_its_name(node, image):
    daemon, _, _ = node
    name = PREFIX + "-victim"
    r = run("podman", "run", "--rm", "--name", name, *RUNC,
            "--network", "ns:/run/netns/" + NETNS, "-e", "ERRNOMON_TEST_TAG=" + TAG, "-e", "PYTHONPATH=/srv",
            "-v", "%s:/srv:ro" % REPO, "--entrypoint", "python3", image,
            "-c", VICTIM, "kpod")
    expect_reset(daemon, victim_result(r.stdout), namespace="", pod="", container=name)


def test_containerd_pod_container_is_labelled_with_its_pod(node):
    daemon, containerd, rootfs = node
    r = containerd.ctr(
        "run", "--rm", "--rootfs", "--read-only", "--cgroup", "%s/%s" % (CGROUP_PARENT, CTR_ID),
        "--with-ns", "network:/run/netns/" + NETNS,
        "--label", "io.kubernetes.pod.name=web-0", "--label", "io.kubernetes.pod.namespace=shop",
        "--label", "io.kubernetes.container.name=nginx",
        "--env", "ERRNOMON_TEST_TAG=" + TAG, "--env", "PYTHONPATH=/srv",
        "--mount", "type=bind,src=%s,dst=/srv,options=rbind:ro" % REPO,
        rootfs, CTR_ID, "/usr/bin/python3", "-c", VICTIM, "kctd")
    expect_reset(daemon, victim_result(r.stdout), namespace="shop", pod="web-0", container="nginx")


def test_headers_missing_in_the_container_is_one_line(image, tmp_path):
    """/lib/modules mounted without the /usr/src its build link points into (this host's fallback headers)."""
    r = run("podman", "run", "--rm", "--name", PREFIX + "-noheaders", *RUNC, "--cap-drop=all",
            "--cap-add=bpf,perfmon", "--security-opt", "seccomp=" + os.path.join(KUBE, "errnomon-seccomp.json"),
            "-v", "/lib/modules:/lib/modules:ro", "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro",
            "--network=none", image, check=False)
    build = "/lib/modules/%s/build" % os.uname().release
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "errnomon: error: %s links to %s, which is not here: mount "
                                                  "the host's /usr/src read-only as well as /lib/modules\n"
                                                  % (build, os.readlink(build)))


# Loads the programs past errnomon's own privilege check, so that the kernel is what refuses.
LOAD_PAST_PREFLIGHT = """
from monitor import loader
try:
    loader.load(loader.find_tracefs(), 4096, 4096)
    print("loaded")
except loader.LoadError as e:
    print("LoadError:", e)
"""


@pytest.mark.parametrize("missing", ["BPF", "PERFMON"])
def test_each_capability_is_needed(image, missing):
    """The DaemonSet's capabilities less one: the kernel refuses to load or attach the programs."""
    (container,) = daemonset()["containers"]
    caps = [c for c in container["securityContext"]["capabilities"]["add"] if c != missing]
    r = run("podman", "run", "--rm", "--name", PREFIX + "-caps", *RUNC, "--cap-drop=all",
            "--cap-add=" + ",".join(caps), "--security-opt", "seccomp=" + os.path.join(KUBE, "errnomon-seccomp.json"),
            "-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro",
            "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro", "--network=none", "--entrypoint", "python3", image,
            "-c", LOAD_PAST_PREFLIGHT, timeout=300)
    assert r.stdout.splitlines()[-1].startswith("LoadError: compiling or attaching the BPF programs failed"), r.stdout
