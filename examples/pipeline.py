"""Two Python functions as a Kubeflow Pipelines v2 pipeline, each step a fairing image pinned by
digest (fairing.kfp.component builds it, or reuses it when the code has not changed):

    python examples/pipeline.py --registry 127.0.0.1:5000/team \\
        --base-image 127.0.0.1:5000/fairing/python:3.11 -o fit-line.yaml

Upload fit-line.yaml to Kubeflow Pipelines (or `kfp run create`). The same steps from the shell:
`fair export kfp examples/pipeline.py:train --registry ... -o train.yaml`."""
import argparse

import fairing.kfp


def train(epochs: int = 200, lr: float = 0.1) -> dict:
    """Fit y = 2x + 1 by gradient descent; prints step=N loss=L (the step's `metrics` output)."""
    import random

    rng = random.Random(0)
    data = [(x, 2 * x + 1) for x in (rng.uniform(-1, 1) for _ in range(100))]
    w = b = 0.0
    for step in range(1, epochs + 1):
        gw = sum(2 * (w * x + b - y) * x for x, y in data) / len(data)
        gb = sum(2 * (w * x + b - y) for x, y in data) / len(data)
        w, b = w - lr * gw, b - lr * gb
        if step % 50 == 0:
            print(f"step={step} loss={sum((w * x + b - y) ** 2 for x, y in data) / len(data):.6f}")
    return {"w": round(w, 3), "b": round(b, 3)}


def evaluate(model: str, tolerance: float = 0.05) -> bool:
    """Is the trained line close to y = 2x + 1? `model` is train's result (JSON)."""
    import json

    m = json.loads(model)
    error = abs(m["w"] - 2) + abs(m["b"] - 1)
    print(f"error={error:.4f}")
    return error <= tolerance


def main() -> None:
    from kfp import compiler, dsl

    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--base-image")
    p.add_argument("-o", "--output", default="fit-line.yaml")
    a = p.parse_args()
    train_op = fairing.kfp.component(train, registry=a.registry, base_image=a.base_image)
    evaluate_op = fairing.kfp.component(evaluate, registry=a.registry, base_image=a.base_image)

    @dsl.pipeline(name="fit-line", description="train, then check the fit")
    def fit_line(lr: float = 0.1):
        t = train_op(lr=lr)
        evaluate_op(model=t.outputs["result"])

    compiler.Compiler().compile(fit_line, a.output)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
