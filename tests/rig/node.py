"""One real node beside kwok's fake ones: kubelet + containerd (runc, cgroupfs) + CNI bridge +
kube-proxy (iptables) + CoreDNS, so pods actually run the images the tests build.

    n = real_node()        # idempotent; starts the control plane too; health-checked
    n.name, n.label, n.taint
    n.mutators()           # node_selector + toleration: how a test puts its pods here
    stop_node()            # undo everything on the host (python -m tests.rig down calls it)

The node registers itself as `fairing-node-0` with the label fairing.dev/real-node=true and the
taint fairing.dev/real-node=true:NoSchedule, so nothing lands on it unless it asks to. Pods get
addresses from POD_CIDR on the bridge `fairing0` (Podman's bridge is 10.88.0.0/16), and resolve
Service names through CoreDNS on the node's own address. Every address stays on this machine.

What this VM needs (found by trying): containerd's CRI refuses negative oom_score_adj here (no
CAP_SYS_RESOURCE) unless `restrict_oom_score_adj = true`; cgroup v1 needs `failCgroupV1: false`
and an explicit cgroupfs driver; no pause image can be pulled, so the rig builds one.

State: ~/.cache/fairing/rig/node/ (configs, containerd's image store, kept across `down`),
/run/fairing/node/ (sockets, runtime state, CNI IP allocations). The kubelet itself uses
/var/lib/kubelet, /var/log/pods and /var/log/containers, and changes a few sysctls; `stop_node()`
puts all of that back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import kube as kube_rig
from .netutil import node_ip
from .state import RigError, Service, cache_dir, log_tail, rig_dir, run, run_dir, service_env, write_if_changed

NODE_NAME = "fairing-node-0"
LABEL = ("fairing.dev/real-node", "true")
TAINT = {"key": "fairing.dev/real-node", "value": "true", "effect": "NoSchedule"}
POD_CIDR = "10.244.0.0/24"
# The real-node tests' own namespace (with the same least-privilege ServiceAccount as fairing-test).
NAMESPACE = "fairing-node"
BRIDGE = "fairing0"
CLUSTER_DOMAIN = "cluster.local"
COREDNS = ("github.com/coredns/coredns", "v1.13.1")
KUBELET_PORT, KUBELET_HEALTHZ = 10250, 10248
PROXY_HEALTHZ, PROXY_METRICS = 10256, 10249
DNS_HEALTH, DNS_READY = 19153, 19181
KUBELET_ROOT = Path("/var/lib/kubelet")
HOST_DIRS = (KUBELET_ROOT, Path("/var/log/pods"), Path("/var/log/containers"))
CNI_BIN = Path("/usr/lib/cni")
# The kubelet sets the first three; the rig sets the last two (routing between pods and Services).
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward",
           "net/bridge/bridge-nf-call-iptables")


def node_dir() -> Path:
    d = rig_dir() / "node"
    d.mkdir(parents=True, exist_ok=True)
    return d


def state_dir() -> Path:
    d = run_dir() / "node"
    d.mkdir(parents=True, exist_ok=True)
    return d


def containerd_sock() -> Path:
    return state_dir() / "containerd.sock"


# --- builds ----------------------------------------------------------------------------------------
COREDNS_MAIN = """package main

// CoreDNS with only the plugins the rig uses: the full build links every cloud DNS provider.
import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// Same relative order as CoreDNS's plugin.cfg.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "kubernetes"}
}

func main() { coremain.Run() }
"""


def ensure_coredns() -> Path:
    """CoreDNS from the Go module proxy, built once as a library user (its documented way to pick
    plugins). client-go is pinned to the control plane's version so Go's build cache is shared."""
    module, version = COREDNS
    out = cache_dir() / "coredns" / version / "coredns"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = node_dir() / "build-coredns.log"
    staging = "v0." + kube_rig.K8S_VERSION.removeprefix("v1.")
    with tempfile.TemporaryDirectory() as tmp, open(log, "ab") as f:
        Path(tmp, "main.go").write_text(COREDNS_MAIN)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        steps = [["go", "mod", "init", "fairing.local/coredns"],
                 ["go", "get", f"{module}@{version}", f"k8s.io/client-go@{staging}", f"k8s.io/api@{staging}",
                  f"k8s.io/apimachinery@{staging}"],
                 ["go", "mod", "tidy"],
                 ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out) + ".tmp", "."]]
        for argv in steps:
            try:
                rc = subprocess.run(argv, cwd=tmp, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    timeout=1800).returncode
            except FileNotFoundError:
                raise RigError("`go` is not installed; the rig builds CoreDNS with it") from None
            if rc != 0:
                raise RigError(f"building CoreDNS {version} failed at `{' '.join(argv[:3])}`\n{log_tail(log)}")
    os.replace(str(out) + ".tmp", out)
    return out


def ensure_builds() -> None:
    """Everything slow, for `scripts/kube-rig build` (ahead of pytest's per-test timeout)."""
    from .images import PAUSE_GO, go_binary

    kube_rig.ensure_binaries()
    ensure_coredns()
    go_binary("pause", PAUSE_GO, node_dir() / "build-pause.log")


# --- configuration files ---------------------------------------------------------------------------
def _registry_hosts(d: Path) -> None:
    """containerd's per-registry config: :5000 and :5446 speak plain HTTP, :5443 is TLS under the
    rig CA. Credentials are not here: the kubelet passes them from the pod's pull secret."""
    from .certs import ensure_certs
    from .registry import PLAIN_PORT, SECURE_PORT, TOKEN_PORT

    ca = ensure_certs().ca_cert
    for port, scheme, extra in ((PLAIN_PORT, "http", ""), (TOKEN_PORT, "http", ""),
                                (SECURE_PORT, "https", f'  ca = "{ca}"\n')):
        host = f"127.0.0.1:{port}"
        write_if_changed(d / host / "hosts.toml",
               f'server = "{scheme}://{host}"\n\n[host."{scheme}://{host}"]\n'
               f'  capabilities = ["pull", "resolve"]\n{extra}')


def _containerd_config(pause: str) -> str:
    d, s = node_dir(), state_dir()
    _registry_hosts(d / "certs.d")
    write_if_changed(d / "net.d" / "10-fairing.conflist", json.dumps({
        "cniVersion": "1.0.0", "name": "fairing-node",
        "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
                     # No masquerade: pods only talk to this machine, and no CNI iptables chains
                     # are left to clean up.
                     "ipMasq": False,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(s / "cni-ipam")}}]},
        indent=1))
    return f"""version = 2
root = "{d / 'containerd'}"
state = "{s / 'containerd-state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{containerd_sock()}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # This VM withholds CAP_SYS_RESOURCE: a negative oom_score_adj is refused, failing every sandbox.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'net.d'}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d / 'certs.d'}"
"""


def _kubelet_config(pki: kube_rig.Pki, ip: str) -> str:
    d = node_dir()
    write_if_changed(d / "resolv.conf", f"nameserver {ip}\n")
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": ip, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": KUBELET_HEALTHZ,
        "tlsCertFile": str(pki.node_serving_crt), "tlsPrivateKeyFile": str(pki.node_serving_key),
        # The API server calls the kubelet (logs, exec) with a client certificate of this CA.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_crt)}},
        "authorization": {"mode": "Webhook"},
        # containerd 1.6 cannot report its cgroup driver; this VM runs cgroup v1.
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_sock()}",
        "clusterDNS": [ip], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(d / "resolv.conf"),
        "registerWithTaints": [TAINT], "maxPods": 40, "serializeImagePulls": False,
        # Tests fill the disk with images; evict only when really short.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                         "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 95, "imageGCLowThresholdPercent": 90,
        "staticPodPath": "", "rotateCertificates": False, "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s", "nodeStatusReportFrequency": "10s",
    }, sort_keys=True)


def _proxy_config(kubeconfig: Path) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)}, "mode": "iptables",
        "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ}", "metricsBindAddress": f"127.0.0.1:{PROXY_METRICS}",
        # Leave the host's conntrack sysctls and route_localnet alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False}, "nodePortAddresses": ["primary"],
    }, sort_keys=True)


def _corefile(ip: str, kubeconfig: Path) -> str:
    # No `forward`: names outside the cluster get no answer here, so nothing leaves the machine.
    return f""".:53 {{
    bind {ip}
    ready 127.0.0.1:{DNS_READY}
    health 127.0.0.1:{DNS_HEALTH}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} fairing-admin
        pods insecure
        ttl 5
    }}
}}
"""


# --- the training operator's PyTorch init container ------------------------------------------------
# The operator gives PyTorchJob workers an init container that waits for the master's DNS name,
# in alpine:3.10 by default (unpullable here). Its documented override is a template file, in a
# cluster a ConfigMap mounted at this path; the operator runs on this machine, so the rig writes
# it here, with the rig's own base image and Python instead of nslookup.
PYTORCH_INIT_TEMPLATE = Path("/etc/config/initContainer.yaml")


def _pytorch_init_template(image: str) -> str:
    code = ("import socket, sys, time\n"
            "for _ in range({{.MaxTries}}):\n"
            "    try:\n        socket.gethostbyname('{{.MasterAddr}}'); sys.exit(0)\n"
            "    except OSError:\n        print('waiting for master', flush=True); time.sleep(2)\n"
            "sys.exit(1)\n")
    return yaml.safe_dump([{"name": "init-pytorch", "image": image, "imagePullPolicy": "IfNotPresent",
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"},
                                          "requests": {"cpu": "50m", "memory": "32Mi"}},
                            "command": ["python3", "-c", code]}], sort_keys=False)


def _ensure_pytorch_init_template(image: str) -> None:
    if write_if_changed(PYTORCH_INIT_TEMPLATE, _pytorch_init_template(image)):
        kube_rig.restart_operator()  # it reads the template once per process


# --- sysctls ---------------------------------------------------------------------------------------
def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _record_sysctls() -> None:
    """The host's values before the node first changed them, restored by stop_node()."""
    f = node_dir() / "sysctl-before.json"
    if f.exists():
        return
    before = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            before[name] = _sysctl_path(name).read_text().strip()
    write_if_changed(f, json.dumps(before, indent=1))


def _set_sysctl(name: str, value: str) -> None:
    p = _sysctl_path(name)
    if p.exists() and p.read_text().strip() != value:
        p.write_text(value)


def _restore_sysctls() -> None:
    f = node_dir() / "sysctl-before.json"
    if not f.exists():
        return
    for name, value in json.loads(f.read_text()).items():
        with contextlib.suppress(OSError):
            _set_sysctl(name, value)
    f.unlink()


# --- services --------------------------------------------------------------------------------------
def _services(pki: kube_rig.Pki) -> dict[str, Service]:
    d, ip = node_dir(), node_ip()
    bins = kube_rig.bin_dir()
    env = dict(service_env(), PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return {
        "apiserver": kube_rig.pod_facing_apiserver(pki),
        "containerd": Service("node/containerd", ["containerd", "--config", str(d / "containerd.toml")], env=env),
        "kubelet": Service("node/kubelet", [
            str(bins / "kubelet"), f"--config={d / 'kubelet.yaml'}", f"--kubeconfig={d / 'kubelet.kubeconfig'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={ip}", f"--node-labels={'='.join(LABEL)}",
            f"--root-dir={KUBELET_ROOT}", "--v=1"], env=env),
        "kube-proxy": Service("node/kube-proxy", [str(bins / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}",
                                                  "--v=1"], env=env),
        "coredns": Service("node/coredns", [str(cache_dir() / "coredns" / COREDNS[1] / "coredns"),
                                            "-conf", str(d / "Corefile")], env=env),
    }



def _ctr(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ctr", "--address", str(containerd_sock()), "--namespace", "k8s.io", *args],
               what=f"ctr {args[0]}", timeout=timeout, check=check)


def _containerd_ok() -> bool:
    if not containerd_sock().exists():
        return False
    return _ctr("version", timeout=5, check=False).returncode == 0


def _ensure(svc: Service, healthy, *, config_changed: bool, port: int | None, timeout: float) -> None:
    if config_changed:
        svc.stop()
    kube_rig.ensure_service(svc, healthy, port=port, timeout=timeout)


def _ensure_kubelet(svc: Service, *, config_changed: bool) -> None:
    """Start the kubelet. containerd answers on its socket (and `ctr version`) a moment before its
    CRI service is initialized; a kubelet started in that moment exits at once with "server is not
    initialized yet" (seen after `down`, when containerd reloads its images). Started again then."""
    for attempt in range(10):
        try:
            _ensure(svc, lambda: kube_rig.http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ}/healthz"),
                    config_changed=config_changed and attempt == 0, port=KUBELET_HEALTHZ, timeout=90)
            return
        except RigError:
            try:
                last_start = svc.log.read_text(errors="replace").rsplit("--- ", 1)[-1]
            except OSError:
                last_start = ""
            if "not initialized yet" not in last_start or attempt == 9:
                raise
            time.sleep(1)


def _node_ready(kube) -> bool:
    node = kube.get("v1", "Node", NODE_NAME) or {}
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True"


# --- the handle ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealNode:
    name: str
    label: tuple[str, str]
    taint: dict | None
    ip: str
    namespace: str
    kubeconfig: Path        # admin
    sa_kubeconfig: Path     # the least-privilege ServiceAccount of `namespace`
    external: bool = False

    def mutators(self) -> list:
        """Pod mutators that put a workload on this node (nothing when the cluster is the user's)."""
        from fairing.deployers import pod

        if self.external:
            return []
        return [pod.node_selector({self.label[0]: self.label[1]}),
                pod.toleration(self.taint["key"], self.taint["value"], effect=self.taint["effect"])]

    def settings_env(self) -> dict[str, str]:
        """The same placement as fairing settings (FAIRING_NODE_SELECTOR / FAIRING_TOLERATIONS),
        for `fair` commands."""
        if self.external:
            return {}
        return {"FAIRING_NODE_SELECTOR": "=".join(self.label),
                "FAIRING_TOLERATIONS": f"{self.taint['key']}={self.taint['value']}:{self.taint['effect']}"}


_cached: RealNode | None = None


def real_node() -> RealNode:
    """Start (or reuse) the control plane and the real node; returns its handle."""
    global _cached
    cp = kube_rig.control_plane()
    if cp.external:
        # A user's own cluster: its nodes are real already; nothing is provisioned here.
        return RealNode(name="", label=("", ""), taint=None, ip="", namespace=cp.namespace,
                        kubeconfig=cp.kubeconfig, sa_kubeconfig=cp.sa_kubeconfig, external=True)
    if _cached is not None and _healthy(cp):
        return _cached
    with kube_rig.kube_lock():
        _ensure_node(cp)
        sa = _ensure_namespace(cp)
    _cached = RealNode(NODE_NAME, LABEL, TAINT, node_ip(), NAMESPACE, cp.kubeconfig, sa)
    return _cached


def _kubernetes_endpoints(ip: str) -> list[tuple[str, dict]]:
    port = {"name": "https", "port": kube_rig.APISERVER_PORT, "protocol": "TCP"}
    return [
        ("/api/v1/namespaces/default/endpoints/kubernetes",
         {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
          "subsets": [{"addresses": [{"ip": ip}], "ports": [port]}]}),
        ("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
         {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
          "metadata": {"name": "kubernetes", "namespace": "default",
                       "labels": {"kubernetes.io/service-name": "kubernetes"}},
          "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}], "ports": [port]}),
    ]


def _ensure_kubernetes_endpoints(pki, ip: str) -> None:
    """The `kubernetes` Service's endpoint is the pod-facing API server, written by the rig: the
    API servers' own reconcilers cannot (their lease lists hold loopback addresses, which an
    Endpoints object refuses, and private test servers would put their random ports there)."""
    for path, doc in _kubernetes_endpoints(ip):
        _api(pki, "PATCH", path + "?fieldManager=fairing-rig-node&force=true", doc,
             content_type="application/apply-patch+yaml")


def _kubernetes_endpoints_ok(pki, ip: str) -> bool:
    try:
        s = _api(pki, "GET", _kubernetes_endpoints(ip)[1][0])
    except OSError:
        return False
    return [a for e in s.get("endpoints") or [] for a in e.get("addresses", [])] == [ip] and \
        [p.get("port") for p in s.get("ports") or []] == [kube_rig.APISERVER_PORT]


def _ensure_namespace(cp) -> Path:
    token = kube_rig.setup_namespace(cp.kube(), NAMESPACE)
    return kube_rig.write_kubeconfig(node_dir() / "sa.kubeconfig", cp.server, cp.pki.ca_crt,
                                     user=f"{kube_rig.SA_NAME}-sa", token=token, namespace=NAMESPACE)


def _healthy(cp) -> bool:
    svcs = _services(cp.pki)
    return all(s.alive() for s in svcs.values()) and kube_rig.http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ}/healthz") \
        and _node_ready(cp.kube()) and _kubernetes_endpoints_ok(cp.pki, node_ip())


def _node_pki(pki: kube_rig.Pki, ip: str) -> None:
    if not pki.node_client_crt.exists():
        kube_rig.issue_leaf(pki, "node-client", f"system:node:{NODE_NAME}", orgs=("system:nodes",))
    if ip not in kube_rig.cert_ips(pki.node_serving_crt):
        kube_rig.issue_leaf(pki, "node-serving", NODE_NAME, server=True, ips=(ip, "127.0.0.1"),
                            dns=(NODE_NAME, "localhost"))


def _ensure_node(cp) -> None:
    from .images import ensure_pause_image
    from .registry import ensure_plain

    for tool in ("containerd", "ctr", "runc", "iptables", "conntrack"):
        if shutil.which(tool) is None:
            raise RigError(f"`{tool}` is not installed: the real node needs it (./scripts/setup installs it)")
    if not (CNI_BIN / "bridge").exists():
        raise RigError(f"{CNI_BIN}/bridge is missing: install containernetworking-plugins (./scripts/setup does)")
    ensure_builds()
    pki, d, ip = cp.pki, node_dir(), node_ip()
    _node_pki(pki, ip)
    reg = ensure_plain()
    pause = ensure_pause_image(reg.url, reg.host, d / "build-pause.log")
    kubelet_kc = kube_rig.write_kubeconfig(d / "kubelet.kubeconfig.new", cp.server, pki.ca_crt,
                                           user=f"system:node:{NODE_NAME}", cert=pki.node_client_crt,
                                           key=pki.node_client_key)
    changed = {
        "containerd": write_if_changed(d / "containerd.toml", _containerd_config(pause)),
        "kubelet": write_if_changed(d / "kubelet.yaml", _kubelet_config(pki, ip))
        | write_if_changed(d / "kubelet.kubeconfig", kubelet_kc.read_text(), 0o600),
        "kube-proxy": write_if_changed(d / "kube-proxy.yaml", _proxy_config(cp.kubeconfig)),
        "coredns": write_if_changed(d / "Corefile", _corefile(ip, cp.kubeconfig)),
    }
    kubelet_kc.unlink()
    _record_sysctls()
    _set_sysctl("net/ipv4/ip_forward", "1")
    _set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    svcs = _services(pki)
    kube_rig.ensure_pod_facing_cert(pki)
    kube_rig.ensure_service(svcs["apiserver"], lambda: kube_rig.https_ok(f"https://{ip}:{kube_rig.APISERVER_PORT}/readyz", pki),
                            port=None, timeout=120)
    _ensure(svcs["containerd"], _containerd_ok, config_changed=changed["containerd"], port=None, timeout=60)
    _ensure(svcs["coredns"], lambda: kube_rig.http_ok(f"http://127.0.0.1:{DNS_READY}/ready"),
            config_changed=changed["coredns"], port=DNS_READY, timeout=60)
    _ensure_kubelet(svcs["kubelet"], config_changed=changed["kubelet"] or changed["containerd"])
    # After the kubelet: kube-proxy reads its node's address from the Node the kubelet registers.
    _ensure(svcs["kube-proxy"], lambda: kube_rig.http_ok(f"http://127.0.0.1:{PROXY_HEALTHZ}/healthz"),
            config_changed=changed["kube-proxy"], port=PROXY_HEALTHZ, timeout=90)
    _ensure_kubernetes_endpoints(pki, ip)
    from .base import PYTHON, REPO

    _ensure_pytorch_init_template(f"{reg.host}/{REPO}:{PYTHON}")
    kube = cp.kube()
    deadline = time.monotonic() + 90
    while not _node_ready(kube):
        if time.monotonic() > deadline:
            raise RigError(f"node {NODE_NAME} not Ready after 90s\n{log_tail(svcs['kubelet'].log)}")
        time.sleep(0.3)


def restart(name: str) -> None:
    """Stop and start one node service ("kubelet", "containerd", "kube-proxy", "coredns") as an
    operator would, then wait until the node is healthy again. For reliability tests."""
    cp = kube_rig.control_plane()
    svc = _services(cp.pki)[name]
    with kube_rig.kube_lock():
        svc.stop(timeout=30)
        _ensure_node(cp)


# --- teardown --------------------------------------------------------------------------------------
def _mounts_under(*roots: Path) -> list[str]:
    prefixes = tuple(str(r).rstrip("/") + "/" for r in roots)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefixes) or point in {str(r) for r in roots}:
            mounts.append(point)
    return sorted(set(mounts), key=len, reverse=True)


def _iptables_cleanup() -> None:
    """Remove the KUBE-* chains the kubelet and kube-proxy made (after `kube-proxy --cleanup`)."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = run([tool, "-t", table, "-S"], what=f"{tool} -S", check=False).stdout.decode().splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for r in rules:  # jumps into our chains from the built-in ones first
                parts = r.split()
                if parts[0] == "-A" and "-j" in parts and parts[parts.index("-j") + 1] in chains \
                        and not parts[1].startswith("KUBE-"):
                    run([tool, "-t", table, "-D", *parts[1:]], what=f"{tool} -D", check=False)
            for c in chains:
                run([tool, "-t", table, "-F", c], what=f"{tool} -F", check=False)
            for c in chains:
                run([tool, "-t", table, "-X", c], what=f"{tool} -X", check=False)


def _rm_cgroups() -> None:
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        top = ctrl / "kubepods"
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def stop_node() -> list[str]:
    """Stop the node's services and undo what they changed on the host. Idempotent."""
    pki = kube_rig.Pki(kube_rig.kube_dir() / "pki")
    svcs = _services(pki)
    stopped = []
    with kube_rig.kube_lock():
        # Pods first, through the kubelet, so CNI releases their addresses and veths properly.
        if svcs["kubelet"].alive() and svcs["containerd"].alive():
            with contextlib.suppress(Exception):
                _drain(pki)
        for name in ("kubelet", "kube-proxy", "coredns", "apiserver"):
            if svcs[name].stop():
                stopped.append(name)
        proxy = kube_rig.bin_dir() / "kube-proxy"
        if proxy.exists():
            run([str(proxy), "--cleanup"], what="kube-proxy --cleanup", check=False, timeout=60)
        netns: list[str] = []
        if svcs["containerd"].alive():
            netns = _kill_containers()
            svcs["containerd"].stop()
            stopped.append("containerd")
        for ns in netns:
            run(["umount", ns], what=f"umount {ns}", check=False)
            with contextlib.suppress(OSError):
                os.unlink(ns)
        for m in _mounts_under(*HOST_DIRS, state_dir(), Path("/run/containerd")):
            if run(["umount", m], what=f"umount {m}", check=False).returncode != 0:
                run(["umount", "-l", m], what=f"umount -l {m}", check=False)
        for p in (*HOST_DIRS, state_dir()):
            shutil.rmtree(p, ignore_errors=True)
        # containerd's shims keep their sockets under /run/containerd whatever its state dir;
        # leave it alone if a distro containerd is using it.
        if not Path("/run/containerd/containerd.sock").exists():
            shutil.rmtree("/run/containerd", ignore_errors=True)
        cni = Path("/var/lib/cni")
        if cni.exists() and not (cni / "networks").exists():  # only libcni's cache, which is ours
            shutil.rmtree(cni, ignore_errors=True)
        run(["ip", "link", "delete", BRIDGE], what="ip link delete", check=False)
        PYTORCH_INIT_TEMPLATE.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            PYTORCH_INIT_TEMPLATE.parent.rmdir()  # only if empty: not ours otherwise
        _iptables_cleanup()
        _rm_cgroups()
        _restore_sysctls()
    return stopped


def _api(pki, method: str, path: str, body: dict | None = None, *,
         content_type: str = "application/json") -> dict:
    """The rig's own admin call to the API server (stdlib only: teardown must not depend on the
    product under test)."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    ctx.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
    req = urllib.request.Request(f"https://127.0.0.1:{kube_rig.APISERVER_PORT}{path}", method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def _drain(pki) -> None:
    pods = _api(pki, "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}").get("items") or []
    for p in pods:
        m = p["metadata"]
        with contextlib.suppress(OSError):
            _api(pki, "DELETE", f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                 {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _ctr("tasks", "ls", "-q", check=False).stdout.strip():
            return
        time.sleep(0.5)


def _kill_containers() -> list[str]:
    """Kill what the kubelet left running; returns the sandboxes' network namespace files."""
    netns = []
    ids = _ctr("containers", "ls", "-q", check=False).stdout.decode().split()
    for cid in ids:
        info = _ctr("containers", "info", cid, check=False).stdout
        with contextlib.suppress(ValueError, KeyError, TypeError):
            spec = json.loads(info)["Spec"]
            for ns in spec["linux"]["namespaces"]:
                if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/cni-"):
                    netns.append(ns["path"])
        _ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False)
    deadline = time.monotonic() + 10
    while _ctr("tasks", "ls", "-q", check=False).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    for cid in ids:
        _ctr("tasks", "delete", "--force", cid, check=False)
        _ctr("containers", "delete", cid, check=False)
    return sorted(set(netns))


def status() -> str:
    pki = kube_rig.Pki(kube_rig.kube_dir() / "pki")
    return "\n".join(f"{s.name:24} {'running pid ' + str(s.pid()) if s.alive() else 'stopped'}  log {s.log}"
                     for s in _services(pki).values())


__all__ = ["real_node", "RealNode", "stop_node", "restart", "ensure_builds", "NODE_NAME", "LABEL", "TAINT", "POD_CIDR"]
