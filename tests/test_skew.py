"""Pre-launch training–serving skew check: a real scikit-learn model pickled on this host (joblib,
compressed joblib and plain pickle) shipped with --file against a different scikit-learn pin, and a
cloudpickle'd function using numpy against a different numpy pin. The check reads the pickles as
data; nothing is unpickled."""
from __future__ import annotations

import importlib.metadata as md
import pickle
import warnings

import pytest

from fairing.skew import SkewWarning, check, pickled_versions
from tests.test_cli import clean_env, fair

SKLEARN = md.version("scikit-learn")
NUMPY = md.version("numpy")
OTHER_SKLEARN = "1.5.2" if SKLEARN != "1.5.2" else "1.4.2"
OTHER_NUMPY = "1.26.4" if NUMPY != "1.26.4" else "1.26.3"
MODEL_PY = ("import joblib\n\nclass Model:\n    def __init__(self):\n        self.m = joblib.load('model.joblib')\n\n"
            "    def predict(self, instances):\n        return self.m.predict(instances).tolist()\n")


def fitted():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(X, y)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    import joblib

    d = tmp_path_factory.mktemp("models")
    m = fitted()
    joblib.dump(m, d / "model.joblib")
    joblib.dump(m, d / "compressed.joblib", compress=3)
    with open(d / "model.pkl", "wb") as f:
        pickle.dump(m, f)
    return d


@pytest.mark.parametrize("name", ["model.joblib", "compressed.joblib", "model.pkl"])
def test_versions_read_from_a_real_model(model_files, name):
    found = pickled_versions((model_files / name).read_bytes())
    assert found["scikit-learn"] == (SKLEARN, "stored in the pickle")
    assert found["numpy"] == (NUMPY, "installed here")


def test_different_pin_warns_with_both_versions(model_files):
    with pytest.warns(SkewWarning) as caught:
        msgs = check({"model.joblib": model_files / "model.joblib"}, [f"scikit-learn=={OTHER_SKLEARN}"])
    assert msgs == [str(w.message) for w in caught] == [
        f"model.joblib was pickled with scikit-learn {SKLEARN}, but the image pins scikit-learn=={OTHER_SKLEARN}: "
        f"loading it there may fail or behave differently; pin scikit-learn=={SKLEARN}, or re-create it with "
        f"scikit-learn=={OTHER_SKLEARN}"]


def test_matching_or_absent_pins_are_quiet(model_files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check({"model.joblib": model_files / "model.joblib"}, [f"scikit-learn=={SKLEARN}", f"numpy>={NUMPY}"]) == []
        assert check({"model.joblib": model_files / "model.joblib"}, ["scikit-learn", "pandas==2.2.2"]) == []


def test_cloudpickled_function_against_a_numpy_pin():
    from fairing.preprocessors.function import FunctionPreprocessor
    from fairing.skew import check_context

    import numpy as np

    def train():
        return float(np.mean([1.0, 2.0]))

    ctx = FunctionPreprocessor(requirements=[f"numpy=={OTHER_NUMPY}"]).prepare(train)
    with pytest.warns(SkewWarning) as caught:
        check_context(ctx)
    assert [str(w.message) for w in caught] == [
        f"the pickled code refers to numpy, which is {NUMPY} here, but the image pins numpy=={OTHER_NUMPY}: loading "
        f"it there may fail or behave differently; pin numpy=={NUMPY}, or re-create it with numpy=={OTHER_NUMPY}"]


def test_fair_deploy_warns_before_building(model_files, tmp_path):
    import shutil

    shutil.copy(model_files / "model.joblib", tmp_path / "model.joblib")
    (tmp_path / "model.py").write_text(MODEL_PY)
    r = fair("deploy", "model.py:Model", "--file", "model.joblib", "-r", f"scikit-learn=={OTHER_SKLEARN}",
             "--registry", "r.example/team", "--deployer", "serving", "--dry-run", cwd=tmp_path,
             env=clean_env(DOCKER_HOST=f"unix://{tmp_path}/dead.sock"))
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [
        f"warning: model.joblib was pickled with scikit-learn {SKLEARN}, but the image pins "
        f"scikit-learn=={OTHER_SKLEARN}: loading it there may fail or behave differently; pin scikit-learn=={SKLEARN}, "
        f"or re-create it with scikit-learn=={OTHER_SKLEARN}"]
