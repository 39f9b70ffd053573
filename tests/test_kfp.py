"""Kubeflow Pipelines v2 export: `fair export kfp` and fairing.kfp.component build the image, pin
it by digest, and write a component kfp itself loads and compiles into a pipeline. The component's
container is then run for real in the rig's engine, the way KFP's launcher runs it, and by KFP's
own local executor (kfp.local.DockerRunner on the rig's Podman), model artifact included."""
import hashlib
import json
import pickle
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from tests.test_cli import assert_one_error, clean_env, fair

kfp = pytest.importorskip("kfp", reason="kfp is a test extra: pip install -e '.[test]'")

STEPS = textwrap.dedent('''
    def train(epochs: int = 3, lr: float = 0.1, tags: list = ["a"]) -> dict:
        """Fit a tiny model."""
        w = 0.0
        for step in range(1, epochs + 1):
            w += lr
            print(f"step={step} loss={1 - w:.3f}")
        return {"w": round(w, 3), "tags": tags}

    def evaluate(model: str, threshold: float = 0.5) -> bool:
        import json
        w = json.loads(model)["w"]
        print(f"score={w}")
        return w > threshold
''')


@pytest.fixture
def steps(tmp_path):
    (tmp_path / "steps.py").write_text(STEPS)
    return tmp_path


def export(tmp_path, registry, base_image, entry, out, *extra):
    repo = f"{registry.host}/fairing-kfp"
    r = fair("export", "kfp", entry, "--registry", repo, "--base-image", base_image.docker, "-o", out, *extra,
             cwd=tmp_path, env=clean_env(FAIRING_RUNS=tmp_path / "runs.db"), check=0)
    assert f"wrote {out}" in r.stderr
    return yaml.safe_load((tmp_path / out).read_text())


def run_component(engine, doc: dict, values: dict, tmp_path: Path) -> tuple[str, dict, str]:
    """Run the component's container as KFP's launcher would: placeholders replaced by the input
    values and output file paths. Returns (result, metrics, log)."""
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    c = doc["implementation"]["container"]
    args = []
    for a in c["args"]:
        if isinstance(a, dict) and "inputValue" in a:
            args.append(str(values[a["inputValue"]]))
        elif isinstance(a, dict) and "outputPath" in a:
            args.append(f"/kfp-out/{a['outputPath']}/data")
        elif isinstance(a, dict) and "executorInput" in a:
            args.append(json.dumps({"outputs": {"outputFile": "/kfp-out/executor_output.json"}}))
        else:
            args.append(a)
    client = engine.client()
    try:
        client.images.pull(c["image"])
        log = client.containers.run(c["image"], entrypoint=c["command"], command=args, remove=True,
                                    volumes={str(out): {"bind": "/kfp-out", "mode": "rw"}}).decode()
    finally:
        client.close()
    return ((out / "result" / "data").read_text(), json.loads((out / "metrics" / "data").read_text()), log)


def test_exported_functions_load_compile_and_run_pinned_by_digest(steps, registry, base_image, engine):
    train = export(steps, registry, base_image, "steps.py:train", "train.yaml")
    evaluate = export(steps, registry, base_image, "steps.py:evaluate", "evaluate.yaml")
    image = train["implementation"]["container"]["image"]
    assert image.startswith(f"{registry.host}/fairing-kfp/") and "@sha256:" in image
    assert [(i["name"], i["type"], i.get("default")) for i in train["inputs"]] == \
        [("epochs", "Integer", "3"), ("lr", "Float", "0.1"), ("tags", "JsonArray", '["a"]')]
    assert [(o["name"], o["type"]) for o in train["outputs"]] == [
        ("result", "String"), ("metrics", "JsonObject"), ("outputs", "Artifact")]
    assert train["description"] == "Fit a tiny model."
    assert evaluate["inputs"][0] == {"name": "model", "type": "String"}  # no default: required

    from kfp import compiler, components, dsl

    train_op = components.load_component_from_file(str(steps / "train.yaml"))
    eval_op = components.load_component_from_file(str(steps / "evaluate.yaml"))

    @dsl.pipeline(name="fit-and-check")
    def pipeline(lr: float = 0.2):
        t = train_op(epochs=4, lr=lr)
        eval_op(model=t.outputs["result"], threshold=0.5)

    compiler.Compiler().compile(pipeline, str(steps / "pipeline.yaml"))
    ir = yaml.safe_load((steps / "pipeline.yaml").read_text())
    executors = ir["deploymentSpec"]["executors"]
    assert sorted(e["container"]["image"] for e in executors.values()) == sorted(
        [image, evaluate["implementation"]["container"]["image"]])
    tasks = ir["root"]["dag"]["tasks"]
    assert tasks["train"]["inputs"]["parameters"]["lr"] == {"componentInputParameter": "lr"}
    assert tasks["evaluate"]["inputs"]["parameters"]["model"] == {
        "taskOutputParameter": {"outputParameterKey": "result", "producerTask": "train"}}

    # The containers really run: inputs arrive as text, outputs land where KFP reads them.
    result, metrics, log = run_component(engine, train, {"epochs": 4, "lr": 0.2, "tags": '["x", "y"]'}, steps)
    assert json.loads(result) == {"w": 0.8, "tags": ["x", "y"]}
    assert metrics == {"loss": 0.2} and "step=4 loss=0.200" in log
    result, metrics, _ = run_component(engine, evaluate, {"model": result, "threshold": 0.5}, steps)
    assert json.loads(result) is True and metrics == {"score": 0.8}

    # Same code, same digest: exporting again reuses the image.
    assert export(steps, registry, base_image, "steps.py:train", "again.yaml")["implementation"]["container"]["image"] == image


def test_a_script_with_declared_params(tmp_path, registry, base_image, engine):
    (tmp_path / "fit.py").write_text(textwrap.dedent("""
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--epochs", type=int)
        p.add_argument("--name")
        a = p.parse_args()
        print(f"epochs={a.epochs} acc={a.epochs / 10}")
        print(f"done {a.name}")
    """))
    doc = export(tmp_path, registry, base_image, "fit.py", "fit.yaml", "--param", "epochs:int=3", "--param", "name")
    assert doc["inputs"] == [{"name": "epochs", "type": "Integer", "default": "3"}, {"name": "name", "type": "String"}]
    result, metrics, _ = run_component(engine, doc, {"epochs": 5, "name": "m1"}, tmp_path)
    assert result == "done m1" and metrics == {"epochs": 5, "acc": 0.5}
    from kfp import components

    assert components.load_component_from_file(str(tmp_path / "fit.yaml")).name == "fit"


def test_component_in_python_is_a_kfp_component(tmp_path, registry, base_image, monkeypatch):
    import fairing.kfp
    from kfp import compiler, dsl

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path / "runs.db"))

    def square(x: int = 2) -> int:
        return x * x

    op = fairing.kfp.component(square, registry=f"{registry.host}/fairing-kfp", base_image=base_image.docker)

    @dsl.pipeline(name="sq")
    def pipeline():
        op(x=3)

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    ir = yaml.safe_load((tmp_path / "p.yaml").read_text())
    (ex,) = ir["deploymentSpec"]["executors"].values()
    assert "@sha256:" in ex["container"]["image"] and "/fairing-kfp/" in ex["container"]["image"]
    import fairing.runs

    (rec,) = fairing.runs.list()
    assert rec["command"] == "export" and rec["image"]["ref"] == ex["container"]["image"]


MODEL_STEPS = textwrap.dedent('''
    import os
    import pickle

    def fit(n: int = 3) -> dict:
        """Fit a model and save it with the run's outputs."""
        model = {"weights": list(range(n))}
        with open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "wb") as f:
            pickle.dump(model, f, protocol=4)
        print(f"step=1 loss={1 / n:.3f}")
        return {"n": n}

    def broken(n: int = 1) -> int:
        raise ValueError(f"no model for n={n}")
''')


@pytest.fixture
def kfp_local(engine, tmp_path, monkeypatch):
    """kfp.local on the rig's Podman: kfp's DockerRunner connects with docker.from_env()."""
    from kfp import local

    monkeypatch.setenv("DOCKER_HOST", engine.docker_host)
    root = tmp_path / "pipeline-root"
    local.init(runner=local.DockerRunner(), pipeline_root=str(root))
    yield root
    local.config.LocalExecutionConfig.instance = None  # the next test starts uninitialised


def test_kfp_local_runs_an_exported_component_and_keeps_its_model(tmp_path, registry, base_image, kfp_local):
    (tmp_path / "model_steps.py").write_text(MODEL_STEPS)
    doc = export(tmp_path, registry, base_image, "model_steps.py:fit", "fit.yaml", "--outputs-type", "model")
    assert doc["outputs"][-1] == {"name": "outputs", "type": "Model",
                                  "description": "the files the code wrote to $FAIRING_OUTPUT_DIR"}
    from kfp import components, dsl
    from kfp.dsl import Input, Model, OutputPath

    fit = components.load_component_from_file(str(tmp_path / "fit.yaml"))
    expected = pickle.dumps({"weights": [0, 1, 2, 3]}, protocol=4)

    # One task, run by KFP's own executor: the model lands where KFP says its artifact is.
    task = fit(n=4)
    model = task.outputs["outputs"]
    assert isinstance(model, Model) and model.name == "outputs"
    path = Path(model.path)
    assert path.is_relative_to(kfp_local) and path.parts[-2:] == ("fit", "outputs")
    assert (path / "model.joblib").read_bytes() == expected
    assert json.loads(task.outputs["result"]) == {"n": 4} and task.outputs["metrics"] == {"loss": 0.25}

    # A pipeline: the next step takes the artifact as Input[Model] and reads the same bytes.
    @dsl.container_component
    def check(model: Input[Model], digest: OutputPath(str)):
        return dsl.ContainerSpec(image=base_image.docker, command=["python3", "-c", textwrap.dedent("""
            import hashlib, os, sys
            folder, out = sys.argv[1:]
            data = open(os.path.join(folder, "model.joblib"), "rb").read()
            os.makedirs(os.path.dirname(out), exist_ok=True)
            open(out, "w").write(hashlib.sha256(data).hexdigest())
        """)], args=[model.path, digest])

    @dsl.pipeline(name="fit-and-check")
    def pipeline(n: int = 4) -> str:
        return check(model=fit(n=n).outputs["outputs"]).output

    assert pipeline(n=4).output == hashlib.sha256(expected).hexdigest()


def test_kfp_local_reports_a_failed_component(tmp_path, registry, base_image, kfp_local, capsys):
    (tmp_path / "model_steps.py").write_text(MODEL_STEPS)
    export(tmp_path, registry, base_image, "model_steps.py:broken", "broken.yaml")
    from kfp import components

    broken = components.load_component_from_file(str(tmp_path / "broken.yaml"))
    with pytest.raises(RuntimeError, match="FAILURE"):
        broken(n=2)
    assert "no model for n=2" in capsys.readouterr().out  # the log, streamed by kfp


def test_the_outputs_artifact_wires_into_a_downstream_model_input(tmp_path, registry, base_image):
    """Compiled for a cluster: the artifact is a system.Model output and the next step's input."""
    (tmp_path / "model_steps.py").write_text(MODEL_STEPS)
    export(tmp_path, registry, base_image, "model_steps.py:fit", "fit.yaml", "--outputs-type", "model")
    from kfp import compiler, components, dsl
    from kfp.dsl import Input, Model

    fit = components.load_component_from_file(str(tmp_path / "fit.yaml"))

    @dsl.component(base_image=base_image.docker)
    def serve(model: Input[Model]) -> str:
        return model.path

    @dsl.pipeline(name="fit-and-serve")
    def pipeline():
        serve(model=fit(n=3).outputs["outputs"])

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    ir = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert ir["components"]["comp-fit"]["outputDefinitions"]["artifacts"]["outputs"]["artifactType"][
        "schemaTitle"] == "system.Model"
    assert ir["root"]["dag"]["tasks"]["serve"]["inputs"]["artifacts"]["model"] == {
        "taskOutputArtifact": {"outputArtifactKey": "outputs", "producerTask": "fit"}}
    args = ir["deploymentSpec"]["executors"]["exec-fit"]["container"]["args"]
    assert args[args.index("--outputs") + 1] == "{{$.outputs.artifacts['outputs'].path}}"
    assert args[args.index("--executor-input") + 1] == "{{$}}"


def test_export_errors(tmp_path):
    (tmp_path / "fit.py").write_text("print(1)\n")
    env = clean_env(FAIRING_RUNS=tmp_path / "runs.db")
    assert_one_error(fair("export", "kfp", "fit.py", "-o", "x.yaml", cwd=tmp_path, env=env), 2, "needs a registry")
    assert_one_error(fair("export", "kfp", "fit.py", "-o", "x.yaml", "--registry", "r.example/t", "--param", "1x",
                          cwd=tmp_path, env=env), 2, "invalid --param '1x'")
    assert_one_error(fair("export", "kfp", "fit.py:nope", "-o", "x.yaml", "--registry", "r.example/t",
                          cwd=tmp_path, env=env), 2, "has no function 'nope'")
    assert_one_error(fair("export", "kfp", "fit.py", "-o", "x.yaml", "--registry", "r.example/t",
                          "--outputs-type", "weights", cwd=tmp_path, env=env), 2, "unknown outputs type 'weights'")
    assert not (tmp_path / "x.yaml").exists()


def test_the_pipeline_example_compiles_with_our_digests(tmp_path, registry, base_image):
    import subprocess
    import sys

    from tests.test_cli import EXAMPLES, ROOT

    out = tmp_path / "fit-line.yaml"
    r = subprocess.run([sys.executable, str(EXAMPLES / "pipeline.py"), "--registry", f"{registry.host}/fairing-kfp",
                        "--base-image", base_image.docker, "-o", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       env=clean_env(PYTHONPATH=ROOT, FAIRING_RUNS=tmp_path / "runs.db"), timeout=600)
    assert r.returncode == 0, r.stderr
    ir = yaml.safe_load(out.read_text())
    images = {k: e["container"]["image"] for k, e in ir["deploymentSpec"]["executors"].items()}
    assert set(images) == {"exec-train", "exec-evaluate"}
    assert all(i.startswith(f"{registry.host}/fairing-kfp/") and "@sha256:" in i for i in images.values())
    assert ir["root"]["dag"]["tasks"]["evaluate"]["inputs"]["parameters"]["model"]["taskOutputParameter"] == \
        {"outputParameterKey": "result", "producerTask": "train"}
    records = json.loads(fair("runs", "-o", "json", env=clean_env(FAIRING_RUNS=tmp_path / "runs.db"), check=0).stdout)
    assert sorted(rec["image"]["ref"] for rec in records) == sorted(images.values())
