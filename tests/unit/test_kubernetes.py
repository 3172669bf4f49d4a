"""deploy/kubernetes: every manifest valid against the Kubernetes API schemas (kubernetes-validate, offline, a
pinned version), the kustomization's resource list, and what the DaemonSet must give errnomon.

tests/bpf/test_containers.py runs the image with the DaemonSet's capabilities, seccomp profile and mounts."""

import json
import os

import kubernetes_validate
import pytest
import yaml

from monitor import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBE = os.path.join(REPO, "deploy", "kubernetes")
K8S_VERSION = "1.32.0"
CLUSTER_SCOPED = {"Namespace"}


def load(name):
    with open(os.path.join(KUBE, name)) as f:
        return list(yaml.safe_load_all(f))


def render():
    """What 'kubectl kustomize deploy/kubernetes' makes of the kustomization: its resources, namespaced."""
    (kustomization,) = load("kustomization.yaml")
    docs = []
    for name in kustomization["resources"]:
        for doc in load(name):
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
            docs.append(doc)
    return docs


def by_kind(kind):
    (doc,) = [d for d in render() if d["kind"] == kind]
    return doc


def test_kustomization_resources():
    assert sorted((d["apiVersion"], d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
                  for d in render()) == [
        ("apps/v1", "DaemonSet", "errnomon", "errnomon"),
        ("monitoring.coreos.com/v1", "PodMonitor", "errnomon", "errnomon"),
        ("v1", "ConfigMap", "errnomon", "errnomon"),
        ("v1", "Namespace", "errnomon", None),
        ("v1", "Service", "errnomon", "errnomon"),
    ]
    listed = set(load("kustomization.yaml")[0]["resources"])
    assert listed == {f for f in os.listdir(KUBE) if f.endswith(".yaml") and f != "kustomization.yaml"}


@pytest.mark.parametrize("kind", ["Namespace", "ConfigMap", "DaemonSet", "Service"])
def test_valid_against_the_api_schema(kind):
    kubernetes_validate.validate(by_kind(kind), K8S_VERSION, strict=True)


def test_an_invalid_manifest_is_refused():
    """The validator does check: a misspelt field of the DaemonSet fails."""
    ds = by_kind("DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def pod_spec():
    return by_kind("DaemonSet")["spec"]["template"]["spec"]


def container():
    (c,) = pod_spec()["containers"]
    return c


def test_least_privilege():
    pod, security = pod_spec(), container()["securityContext"]
    assert pod["hostPID"] is True and "hostNetwork" not in pod and pod["automountServiceAccountToken"] is False
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert security["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/errnomon-seccomp.json"}


def test_seccomp_profile_allows_bpf_and_perf_event_open_only_beyond_the_default():
    with open(os.path.join(KUBE, "errnomon-seccomp.json")) as f:
        profile = json.load(f)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = set()
    for rule in profile["syscalls"]:
        assert rule["action"] == "SCMP_ACT_ALLOW"
        if "args" not in rule:
            allowed.update(rule["names"])
    assert {"bpf", "perf_event_open", "socket", "clone", "execve"} <= allowed
    assert not allowed & {"mount", "umount2", "unshare", "setns", "pivot_root", "kexec_load", "init_module",
                          "finit_module", "delete_module", "ptrace", "process_vm_readv",
                          "process_vm_writev", "reboot", "keyctl", "add_key", "request_key", "kcmp"}


def test_mounts():
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    host = {path: volumes[m["name"]]["hostPath"]["path"] for path, m in mounts.items() if "hostPath" in volumes[m["name"]]}
    assert host == {
        "/lib/modules": "/lib/modules", "/usr/src": "/usr/src", "/sys/kernel/tracing": "/sys/kernel/tracing",
        "/sys/fs/cgroup": "/sys/fs/cgroup", "/host/run/containerd": "/run/containerd",
        "/host/run/containers": "/run/containers", "/host/var/lib/containers": "/var/lib/containers",
    }
    assert all(mounts[path]["readOnly"] is True for path in host)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert volumes[mounts["/etc/errnomon"]["name"]]["configMap"]["name"] == "errnomon"
    assert volumes[mounts["/etc/errnomon-web"]["name"]]["secret"] == {"secretName": "errnomon-web", "defaultMode": 0o400}
    assert mounts["/etc/errnomon-web"]["readOnly"] is True


def test_config_map_is_a_valid_config_that_matches_the_mounts():
    cfg = config.parse(by_kind("ConfigMap")["data"]["config.yaml"], "configmap.yaml")
    assert cfg.pod_labels is True and cfg.pod_host_root == "/host"
    assert "--config.file=/etc/errnomon/config.yaml" in container()["args"]


def test_probes_and_resources_use_the_metrics_port():
    c = container()
    assert c["ports"] == [{"name": "metrics", "containerPort": 9779, "protocol": "TCP"}]
    assert "--web.listen-address=:9779" in c["args"]
    # the safe form: TLS, client certificates and basic auth from the mounted Secret; kubelet cannot pass
    # them, so its probes connect only
    assert "--web.config.file=/etc/errnomon-web/web-config.yml" in c["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(c[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"tcpSocket"}
        assert c[probe]["tcpSocket"] == {"port": "metrics"}
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}


def test_service_and_pod_monitor_select_the_pods():
    labels = by_kind("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert by_kind("DaemonSet")["spec"]["selector"]["matchLabels"] == labels
    service = by_kind("Service")["spec"]
    assert service["selector"] == labels and service["ports"][0]["targetPort"] == "metrics"
    # No schema for the operator's CRD offline: its structure as the prometheus-operator v1 API defines it.
    monitor = by_kind("PodMonitor")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}
    assert monitor["spec"]["selector"] == {"matchLabels": labels}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert set(endpoint) == {"port", "path", "interval", "relabelings", "scheme", "tlsConfig", "basicAuth"}
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("metrics", "/metrics", "https")
    # SafeTLSConfig and BasicAuth: secret key selectors in the PodMonitor's namespace
    scrape = {"name": "errnomon-scrape"}
    assert endpoint["tlsConfig"] == {"ca": {"secret": dict(scrape, key="ca.crt")},
                                     "cert": {"secret": dict(scrape, key="tls.crt")},
                                     "keySecret": dict(scrape, key="tls.key"), "serverName": "errnomon.errnomon.svc"}
    assert endpoint["basicAuth"] == {"username": dict(scrape, key="username"), "password": dict(scrape, key="password")}
    assert endpoint["relabelings"][0] == {"action": "labeldrop", "regex": "(namespace|pod|container)"}
