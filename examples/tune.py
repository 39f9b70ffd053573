"""Hyperparameter tuning of a function, locally: the image (here: the packaged context) is built
once and 6 trials of a toy "training" run 2 at a time; the best one is printed and plotted.

    python examples/tune.py            # local processes (no registry, no cluster configured)
    python examples/tune.py tune.png   # also save the plot

The same call tunes on a cluster with registry="HOST/PATH" (trials as Jobs, or as a Katib
Experiment when the cluster has Katib). A script or notebook is tuned the same way with
`fair tune train.py --param x=0..6 --objective score --maximize`."""
import sys

import fairing


def train(x, layers):
    # A stand-in for real training: the score peaks at x=3, a little better with 2 layers.
    score = -(x - 3) ** 2 + (0.5 if layers == 2 else 0.0)
    return {"score": score, "loss": -score}


if __name__ == "__main__":
    result = fairing.tune(train, params={"x": fairing.uniform(0, 6), "layers": fairing.choice([1, 2, 3])},
                          objective="score", goal="maximize", trials=6, parallel=2, algorithm="tpe", seed=0)
    best = result.best
    print(f"best: x={best.params['x']:.3f} layers={best.params['layers']} score={best.value:.3f}")
    print(f"{len(result.finished_trials)} of {len(result.trials)} trials finished, all on {result.image}")
    if len(sys.argv) > 1:
        result.plot(sys.argv[1])
        print(f"plot: {sys.argv[1]}")
