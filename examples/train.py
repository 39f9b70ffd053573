"""A tiny training job: fit y = 2x + 1 with gradient descent, stdlib only.

    fair train examples/train.py                 # locally (no registry, no cluster configured)
    fair train examples/train.py -- --epochs 50  # arguments after -- go to the script

It prints its progress and, last, a line the tests check: `trained: w=2.00 b=1.00`."""
import argparse
import os
import random


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    rng = random.Random(0)
    data = [(x, 2 * x + 1 + rng.gauss(0, 0.01)) for x in (rng.uniform(-1, 1) for _ in range(200))]
    w = b = 0.0
    for epoch in range(1, args.epochs + 1):
        gw = sum(2 * (w * x + b - y) * x for x, y in data) / len(data)
        gb = sum(2 * (w * x + b - y) for x, y in data) / len(data)
        w, b = w - args.lr * gw, b - args.lr * gb
        if epoch % 50 == 0 or epoch == args.epochs:
            loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
            print(f"epoch {epoch} loss {loss:.6f}", flush=True)
    where = "inside fairing" if os.environ.get("FAIRING_RUNTIME") == "1" else "directly"
    print(f"ran {where}")
    print(f"trained: w={w:.2f} b={b:.2f}")


if __name__ == "__main__":
    main()
