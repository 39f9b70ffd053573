"""The rig's real node itself: registered with its label and taint, running real containers whose
logs come back through the API server, with cluster DNS, ClusterIPs (kube-proxy) and the API server
reachable from pods, and no answer where there is no service."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from fairing.kube.client import Kube
from fairing.kube.logs import read_log

PROBE = r'''
import json, os, socket, ssl, sys, urllib.request
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
out = {"api_ip": socket.gethostbyname("kubernetes.default.svc.cluster.local")}
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
tok = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
req = urllib.request.Request("https://kubernetes.default.svc/version", headers={"Authorization": "Bearer " + tok})
out["api_version"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
svc = os.environ["WEB_SERVICE"]
out["web_ip"] = socket.gethostbyname(svc)
out["web_body"] = urllib.request.urlopen("http://%s/token.txt" % svc, timeout=10).read().decode()
try:
    urllib.request.urlopen("http://%s/" % os.environ["EMPTY_SERVICE"], timeout=5)
    out["empty"] = "answered"
except Exception as e:
    out["empty"] = type(e).__name__ + ": " + str(e)
try:
    socket.gethostbyname("no-such-service.%s.svc.cluster.local" % ns)
    out["nxdomain"] = False
except socket.gaierror:
    out["nxdomain"] = True
print("PROBE " + json.dumps(out), flush=True)
'''


def wait_pod(kube, ns, name, phases, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        p = kube.get("v1", "Pod", name, ns) or {}
        if (p.get("status") or {}).get("phase") in phases:
            return p
        assert time.monotonic() < deadline, f"pod {name} not {phases}: {p.get('status')}"
        time.sleep(0.3)


def test_the_node_is_registered_ready_labelled_and_tainted(real_node, kube):
    if real_node.external:
        pytest.skip("the rig's own node; a user's cluster brings its own")
    node = kube.kube().get("v1", "Node", real_node.name)
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True"
    assert node["metadata"]["labels"][real_node.label[0]] == real_node.label[1]
    assert real_node.taint["key"] in {t["key"] for t in node["spec"].get("taints", [])}
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addrs["InternalIP"] == real_node.ip and not real_node.ip.startswith("127.")


def test_pods_get_dns_clusterips_and_the_api_server(on_node, base_image):
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    ns, tag = on_node.namespace, uuid.uuid4().hex[:6]
    token = uuid.uuid4().hex
    web, empty, probe = f"web-{tag}", f"empty-{tag}", f"probe-{tag}"
    placement = {"nodeSelector": {on_node.node.label[0]: on_node.node.label[1]},
                 "tolerations": [{**on_node.node.taint, "operator": "Equal"}]} if not on_node.node.external else {}
    objs = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": web, "labels": {"app": web}},
         "spec": {**placement, "containers": [{"name": "web", "image": on_node.base, "command": ["sh", "-c",
                  f"mkdir -p /srv && echo -n {token} > /srv/token.txt && exec python3 -m http.server 8080 -d /srv"],
                  "ports": [{"containerPort": 8080}],
                  "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": web},
         "spec": {"selector": {"app": web}, "ports": [{"port": 80, "targetPort": 8080}]}},
        # A Service whose selector matches nothing: kube-proxy must refuse it, never route it out.
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": empty},
         "spec": {"selector": {"app": f"nothing-{tag}"}, "ports": [{"port": 80}]}},
    ]
    for o in objs:
        kube.create(o, ns)
    try:
        deadline = time.monotonic() + 120  # Ready: the Service has an endpoint only then
        while not any(c["type"] == "Ready" and c["status"] == "True"
                      for c in (kube.get("v1", "Pod", web, ns).get("status") or {}).get("conditions") or []):
            assert time.monotonic() < deadline, "web pod never became Ready"
            time.sleep(0.3)
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": probe}, "spec": {
            **placement, "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": on_node.base, "command": ["python3", "-c", PROBE],
                            "env": [{"name": "WEB_SERVICE", "value": f"{web}.{ns}.svc.cluster.local"},
                                    {"name": "EMPTY_SERVICE", "value": f"{empty}.{ns}.svc.cluster.local"}]}]}}, ns)
        p = wait_pod(kube, ns, probe, {"Succeeded", "Failed"})
        # The container's log, read through the API server from the kubelet (kubectl logs).
        log = "\n".join(read_log(kube, probe, ns, "probe"))
        assert p["status"]["phase"] == "Succeeded", log
        out = json.loads(log.split("PROBE ", 1)[1].splitlines()[0])
        svc_ip = kube.get("v1", "Service", web, ns)["spec"]["clusterIP"]
        assert out["api_ip"] == "10.96.0.1"
        assert out["api_version"] == "v1.34.4"
        assert out["web_ip"] == svc_ip and out["web_body"] == token
        assert out["empty"] != "answered" and "404" not in out["empty"], out["empty"]
        assert out["nxdomain"] is True
    finally:
        for kind, n in (("Pod", probe), ("Pod", web), ("Service", web), ("Service", empty)):
            kube.delete("v1", kind, n, ns)
