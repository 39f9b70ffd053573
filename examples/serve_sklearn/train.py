"""Train a tiny iris classifier and save it with joblib: `python train.py [OUT_DIR]`.

Writes OUT_DIR/model.joblib (default: next to this file) and prints the held-out accuracy."""
from __future__ import annotations

import sys
from pathlib import Path


def train(out_dir: str | Path = Path(__file__).parent) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True)  # ships with scikit-learn: no download
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    clf = LogisticRegression(max_iter=500).fit(X_train, y_train)
    print(f"held-out accuracy: {clf.score(X_test, y_test):.3f}")
    out = Path(out_dir) / "model.joblib"
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(clf, out)
    return out


if __name__ == "__main__":
    print(f"saved {train(*sys.argv[1:2])}")
