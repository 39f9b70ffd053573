"""Retrain every night: examples/train.py as a Kubernetes CronJob pinned to the built image's digest.

    python examples/scheduled_retrain.py --registry 127.0.0.1:5000/team --dry-run   # print manifests
    python examples/scheduled_retrain.py --registry 127.0.0.1:5000/team             # build + schedule

The same with the CLI:  fair train examples/train.py --schedule "0 3 * * *" --registry ...
Remove it with:         fair delete nightly-retrain"""
import argparse
import json
from pathlib import Path

from fairing.api import TrainJob

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", help="where to push the image (default: from fairing.yaml / FAIRING_REGISTRY)")
    p.add_argument("--base-image", help="image to add the code to")
    p.add_argument("--namespace", help="Kubernetes namespace")
    p.add_argument("--kubeconfig", help="kubeconfig file")
    p.add_argument("--schedule", default="0 3 * * *", help="cron schedule (default: every day at 03:00)")
    p.add_argument("--name", default="nightly-retrain")
    p.add_argument("--dry-run", action="store_true", help="print the manifests, apply nothing")
    args = p.parse_args()

    job = TrainJob(
        HERE / "train.py",
        registry=args.registry,
        base_image=args.base_image,
        namespace=args.namespace,
        schedule=args.schedule,
        name=args.name,
        args=["--epochs", "100"],
        kubeconfig=args.kubeconfig,
    )
    if args.dry_run:
        import yaml

        print(yaml.safe_dump_all(job.dry_run()["manifests"], sort_keys=False))
        return
    handle = job.submit()
    print(json.dumps({"name": handle.name, "schedule": args.schedule, "image": job.image.ref}))


if __name__ == "__main__":
    main()
