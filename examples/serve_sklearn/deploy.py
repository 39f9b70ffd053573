"""Serve the iris model: `python deploy.py --base-image REG/python:3.11 --registry REG [--deployer local]`.

Trains first if model.joblib is missing, builds the serving image with the append builder, runs it
(local: a container on a 127.0.0.1 port; serving/inferenceservice: on your cluster), asks for a
few predictions with both protocols and deletes the endpoint (unless --keep)."""
from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import fairing
from fairing.serving import PredictionEndpoint

HERE = Path(__file__).parent
# Pin what the model was trained with: a joblib pickle wants the same scikit-learn to load it.
REQUIREMENTS = [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "numpy", "scipy", "joblib")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base-image", required=True, help="an image with python3, e.g. 127.0.0.1:5000/fairing/python:3.11")
    p.add_argument("--registry", required=True, help="where to push the serving image, e.g. 127.0.0.1:5000")
    p.add_argument("--deployer", default="local", choices=["local", "serving", "inferenceservice"])
    p.add_argument("--name", default="iris", help="endpoint (and model) name")
    p.add_argument("--namespace", default=None)
    p.add_argument("--keep", action="store_true", help="leave the endpoint running")
    args = p.parse_args()

    if not (HERE / "model.joblib").exists():
        from train import train

        train(HERE)
    opts = {"namespace": args.namespace} if args.namespace and args.deployer != "local" else {}
    ep = PredictionEndpoint(
        f"{HERE}/model.py:IrisModel", name=args.name, base_image=args.base_image, registry=args.registry,
        deployer=args.deployer, requirements=REQUIREMENTS, files=["model.joblib"], **opts)
    ep.create()
    try:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        print("V1:", ep.predict(rows))
        print("v2:", ep.predict(rows, protocol="v2"))
    except fairing.FairingError as e:
        print(f"error: {e}")
    finally:
        if not args.keep:
            ep.delete()


if __name__ == "__main__":
    main()
