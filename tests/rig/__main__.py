"""CLI: python -m tests.rig up|down|env  (used by bench/ scripts and by hand)."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import down, up
from .state import RigError


def exports(services: dict) -> dict[str, str]:
    reg, sec, tok, eng = (services[k] for k in ("registry", "secure_registry", "token_registry",
                                                "engine"))
    env = {
        "FAIRING_RIG_REGISTRY": reg.host,
        "FAIRING_RIG_SECURE_REGISTRY": sec.host,
        "FAIRING_RIG_SECURE_USERNAME": sec.username,
        "FAIRING_RIG_SECURE_PASSWORD": sec.password,
        "FAIRING_RIG_CA_FILE": sec.ca_file,
        "FAIRING_RIG_TOKEN_REGISTRY": tok.host,
        "FAIRING_RIG_TOKEN_USERNAME": tok.username,
        "FAIRING_RIG_TOKEN_PASSWORD": tok.password,
        "DOCKER_HOST": eng.docker_host,
    }
    if "base_image" in services:
        b = services["base_image"]
        env.update(FAIRING_RIG_BASE_IMAGE=b.docker, FAIRING_RIG_BASE_IMAGE_OCI=b.oci,
                   FAIRING_RIG_BASE_IMAGE_INDEX=b.index, FAIRING_RIG_BASE_PYTHON=b.python)
    if "s3" in services:
        s3 = services["s3"]
        env.update(FAIRING_RIG_S3_ENDPOINT=s3.endpoint, FAIRING_RIG_S3_POD_ENDPOINT=s3.pod_endpoint,
                   FAIRING_RIG_S3_ACCESS_KEY=s3.access_key, FAIRING_RIG_S3_SECRET_KEY=s3.secret_key,
                   FAIRING_RIG_S3_REGION=s3.region)
    if "prometheus" in services:
        env["FAIRING_RIG_PROMETHEUS_URL"] = services["prometheus"].url
    if "kube" in services:
        k = services["kube"]
        env.update(KUBECONFIG=str(k.kubeconfig), FAIRING_RIG_KUBE_NAMESPACE=str(k.namespace))
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, text in (("up", "start or verify the rig's services"),
                       ("env", "print shell exports for the rig (starts what is missing)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--no-base", action="store_true", help="skip the base image")
        s.add_argument("--kube", action="store_true", help="also start the Kubernetes control plane")
        s.add_argument("--node", action="store_true",
                       help="also start the real node (kubelet + containerd; implies --kube)")
        s.add_argument("--s3", action="store_true",
                       help="also start the S3 server (SeaweedFS; builds `weed` the first time, ~5 minutes)")
        s.add_argument("--prometheus", action="store_true",
                       help="also start Prometheus scraping the real node's annotated pods (implies --node)")
    sub.add_parser("down", help="stop the rig's services (cached data is kept)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "down":
            stopped = down()
            print("stopped: " + (", ".join(stopped) or "nothing was running"))
            return 0
        services = up(base=not args.no_base, kube=args.kube, node=args.node, s3=args.s3, prometheus=args.prometheus)
    except RigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    env = exports(services)
    if args.cmd == "env":
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
    else:
        for k, v in env.items():
            shown = "***" if k.endswith(("PASSWORD", "SECRET_KEY")) else v
            print(f"{k:32} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
