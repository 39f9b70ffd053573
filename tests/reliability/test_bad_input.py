"""Bad input, through the CLI (`fair` in a subprocess) and the Python API: each case checks the
exact one-line message (and hint), the exit code or exception type, no traceback, and that nothing
was created: no repository/tag in the registry, no Job or CronJob in the namespace, no temp dir.

Every run is pointed at a working registry and cluster (the rig's), so a valid input would really
push and deploy: "nothing created" is a real check, not a vacuous one. Cases whose message or
behaviour is wrong today are xfail(strict=True) with the reason, so fixing the product flips them.
"""
from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from fairing.errors import BuildError, ConfigError, FairingError

from .conftest import clean_env, delete_tags, error_lines, fair, tags

@dataclass
class Case:
    id: str
    run: list[str] | Callable  # CLI argv (str.format'ed with the placeholders below) or an API callable(v)
    expect: int | type  # exit code for the CLI, exception type for the API
    message: str  # exact; placeholders {cwd} {reg} {base} {ns} {img} {name} {outside}
    hint: str | None = None  # exact when given (a hint line must exist either way)
    setup: Callable[[Path, Path], None] | None = None  # (work dir, outside dir)
    env: dict = field(default_factory=dict)
    xfail: str | None = None
    caps_dropped: bool = False  # run without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (see below)


COMMON = ["--registry", "{reg}/reliability", "--base-image", "{base}", "-n", "{ns}", "--image-name", "{img}",
          "--name", "{name}"]
TRAIN = ["train", "x.py", *COMMON]
REF_HINT = "use registry/repo[:tag][@sha256:...], e.g. 127.0.0.1:5000/team/train:v1"
SCHEDULE_HINT = ("five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day), "
                 "'*/15 * * * *' (every 15 minutes), '0 2 * * MON-FRI', or @hourly/@daily/@weekly")


# --- setups ------------------------------------------------------------------------------------
def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)


def _project(work: Path) -> Path:
    proj = work / "proj"
    _write(proj / "train.py", "print(1)\n")  # 9 bytes: part of an expected message
    return proj


def _notebook(path: Path, cells) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def setup_markdown_only_notebook(work, outside):
    import nbformat

    _notebook(work / "nb" / "empty.ipynb", [nbformat.v4.new_markdown_cell("# only text, no code")])


def setup_huge_context(work, outside):
    _project(work)
    with open(work / "proj" / "data.bin", "wb") as f:  # sparse: 100 MiB that take no disk
        f.truncate(100 << 20)


def setup_symlink_file(work, outside):
    _project(work)
    _write(outside / "credentials", "aws_secret_access_key = do-not-ship\n")
    os.symlink(outside / "credentials", work / "proj" / "credentials")


def setup_symlink_dir(work, outside):
    _project(work)
    _write(outside / "datasets" / "a.csv", "x\n")
    os.symlink(outside / "datasets", work / "proj" / "data")


def setup_unreadable(work, outside):
    _project(work)
    _write(work / "proj" / "data.csv", "a,b\n")
    os.chmod(work / "proj" / "data.csv", 0)


def setup_fifo(work, outside):
    _project(work)
    os.mkfifo(work / "proj" / "pipe")


def setup_dangling(work, outside):
    _project(work)
    os.symlink("/nonexistent/file", work / "proj" / "dangling")


def config(text: str):
    def setup(work, outside):
        _write(work / "fairing.yaml", text)
    return setup


def file(rel: str, text: str):
    def setup(work, outside):
        _write(work / rel, text)
    return setup


# --- API cases: callables taking the placeholder values -----------------------------------------
def _trainjob(v, entry, **kw):
    from fairing.api import TrainJob

    kw.setdefault("registry", f"{v['reg']}/reliability")
    kw.setdefault("base_image", v["base"])
    kw.setdefault("namespace", v["ns"])
    kw.setdefault("kubeconfig", v["kubeconfig"])
    kw.setdefault("image_name", v["img"])
    kw.setdefault("deployer", "job")
    return TrainJob(entry, progress=False, **kw)


def api_set_builder(v):
    import fairing.config

    fairing.config.set_builder("kaniko2")


def api_unknown_resource(v):
    _trainjob(v, str(v["cwd"] / "x.py"), resources={"disk": "10Gi"}).submit()


def api_no_entry(v):
    _trainjob(v, None).submit()


def api_cron_macro(v):
    from fairing.deployers.k8s.cronjob import CronJobDeployer

    CronJobDeployer(v["ns"], schedule="@fortnightly")


def api_cron_seconds(v):
    from fairing.deployers.k8s.cronjob import CronJobDeployer

    CronJobDeployer(v["ns"], schedule="0 0 3 * * *")


def api_memory_limit(v):
    from fairing.deployers import pod

    _trainjob(v, str(v["cwd"] / "x.py"), deployer_options={"mutators": [pod.memory("1Gi", limit="512Mi")]}).submit()


def api_parallelism(v):
    _trainjob(v, str(v["cwd"] / "x.py"), deployer_options={"parallelism": 3, "completions": 2}).submit()


def api_unknown_option(v):
    _trainjob(v, str(v["cwd"] / "x.py"), deployer_options={"retries": 3}).submit()


def api_platform(v):
    from fairing.builders.append import AppendBuilder

    AppendBuilder(v["base"], platform="amd64")


def api_bad_digest(v):
    from fairing.builders.append import AppendBuilder

    AppendBuilder(f"{v['reg']}/fairing/python@sha256:1234")


def api_unpinned(v):
    from fairing.context import BuiltImage
    from fairing.deployers.k8s.job import JobDeployer

    JobDeployer(v["ns"], kubeconfig=v["kubeconfig"], name=v["name"]).deploy(
        BuiltImage(ref=f"{v['reg']}/reliability/{v['img']}:latest", digest=""))


def api_executable_escape(v):
    _trainjob(v, str(v["cwd"] / "proj"), preprocessor_options={"executable": "../evil.py"}).submit()


def api_unpicklable(v):
    lock = threading.Lock()

    def train():
        with lock:
            return 1

    _trainjob(v, train).submit()


def api_env_name(v):
    from fairing.deployers import pod

    pod.env({"1BAD": "x"})


def api_secret_name(v):
    from fairing.deployers import pod

    pod.env_from_secret("Team_Secrets", ["TOKEN"])


def api_relative_mount(v):
    from fairing.deployers import pod

    pod.pvc("datasets", "data")


def api_gpu_vendor(v):
    from fairing.deployers import pod

    pod.gpu(1, vendor="acme")


CASES = [
    # -- image references ------------------------------------------------------------------------
    Case("cli-base-image-uppercase", ["train", "x.py", *COMMON, "--base-image", "{reg}/Fairing/Python:3.11"], 2,
         "invalid repository 'Fairing/Python' in image reference '{reg}/Fairing/Python:3.11': uppercase letters are not allowed",
         REF_HINT),
    Case("cli-registry-with-url-scheme", ["train", "x.py", *COMMON, "--registry", "http://{reg}/reliability"], 2,
         "invalid --registry 'http://{reg}/reliability': it must not contain a URL scheme",
         "drop the scheme: HOST[:PORT]/PATH, e.g. 127.0.0.1:5000/team"),
    Case("cli-target-two-tags", ["build", "x.py", *COMMON[:-2], "--target", "{reg}/reliability/{img}:v1:v2"], 2,
         "invalid repository 'reliability/{img}:v1' in image reference '{reg}/reliability/{img}:v1:v2': "
         "only lowercase letters, digits and . _ - / are allowed", REF_HINT),
    Case("cli-target-is-a-digest", ["build", "x.py", *COMMON[:-2], "--target", "{reg}/reliability/{img}@sha256:" + "a" * 64], 2,
         "cannot push to a digest ({reg}/reliability/{img}@sha256:" + "a" * 64 + ")",
         "give a tag or no tag: the digest is computed from the content"),
    Case("api-base-image-bad-digest", api_bad_digest, ConfigError,
         "invalid digest in image reference '{reg}/fairing/python@sha256:1234'", "a digest looks like sha256:<64 hex digits>"),
    Case("api-invalid-platform", api_platform, ConfigError, "invalid platform 'amd64'",
         "use os/arch[/variant], e.g. linux/amd64"),
    Case("api-deploy-unpinned-image", api_unpinned, ConfigError,
         "image '{reg}/reliability/{img}:latest' is not pinned by digest",
         "deploy the BuiltImage a builder returned (registry/repo@sha256:...)"),
    # -- unknown names ---------------------------------------------------------------------------
    Case("cli-unknown-builder", [*TRAIN, "--builder", "kaniko2"], 2, "unknown builder 'kaniko2'",
         "choose one of: append, cluster, docker"),
    Case("cli-unknown-deployer", [*TRAIN, "--deployer", "kubeflow"], 2, "unknown deployer 'kubeflow'",
         "choose one of: cronjob, inferenceservice, job, local, pod, pytorchjob, serving, tfjob, trainjob"),
    Case("cli-unknown-preprocessor", [*TRAIN, "--preprocessor", "magic"], 2, "unknown preprocessor 'magic'",
         "choose one of: full_notebook, function, notebook, python, serve"),
    Case("api-set-builder-unknown", api_set_builder, ConfigError, "unknown builder 'kaniko2'",
         "choose one of: append, cluster, docker"),
    Case("api-unknown-job-option", api_unknown_option, ConfigError, "unknown option for the job deployer: retries",
         "options: active_deadline_seconds, backoff_limit, completion_mode, completions, parallelism, "
         "ttl_seconds_after_finished (plus namespace, kubeconfig, context, name, mutators, labels, annotations, "
         "cleanup, dry_run, queue)"),
    Case("cli-serving-deployer-for-training", [*TRAIN, "--deployer", "serving"], 2,
         "the serving deployers need an image built from a serving context",
         "build it with the serve preprocessor (PredictionEndpoint does)"),
    # -- schedules -------------------------------------------------------------------------------
    Case("cli-cron-minute-out-of-range", [*TRAIN, "--schedule", "61 * * * *"], 2,
         "invalid schedule '61 * * * *': minute 61 is out of range 0-59", SCHEDULE_HINT),
    Case("cli-cron-not-cron", [*TRAIN, "--schedule", "nightly"], 2,
         "cli: bad value for schedule: expected a cron expression with 5 fields, e.g. \"0 3 * * *\", or @daily",
         "schedule: cron schedule; makes the training a CronJob"),
    Case("api-cron-seconds-field", api_cron_seconds, ConfigError,
         "invalid schedule '0 0 3 * * *': it has 6 fields, not 5 (Kubernetes CronJobs have no seconds field)",
         SCHEDULE_HINT),
    Case("api-cron-unknown-macro", api_cron_macro, ConfigError,
         "invalid schedule '@fortnightly': unknown macro '@fortnightly'", SCHEDULE_HINT),
    # -- resources -------------------------------------------------------------------------------
    Case("cli-cpu-not-a-quantity", [*TRAIN, "--cpu", "lots"], 2, "invalid cpu request 'lots'",
         "use a quantity such as '500m', '2', '512Mi', '4Gi'"),
    Case("cli-memory-with-bytes-suffix", [*TRAIN, "--memory", "4GB"], 2, "invalid memory request '4GB'",
         "Kubernetes writes bytes without 'B': use '4Gi' (binary) or '4G' (decimal)"),
    Case("cli-gpus-negative", [*TRAIN, "--gpus", "-1"], 2,
         "Invalid value for '--gpus': Input should be greater than or equal to 0", "run `fair train --help` for usage"),
    Case("api-memory-limit-below-request", api_memory_limit, ConfigError, "memory limit 512Mi is below the request 1Gi",
         "a limit must be at least the request"),
    Case("api-unknown-resource", api_unknown_resource, ConfigError, "unknown resource 'disk'",
         "resources take cpu, memory and gpus"),
    Case("api-parallelism-over-completions", api_parallelism, ConfigError, "parallelism 3 is more than completions 2",
         "parallelism is how many of the completions run at once"),
    Case("api-gpu-vendor", api_gpu_vendor, ConfigError, "unknown GPU vendor 'acme'",
         "use one of nvidia, amd, intel or a resource name like 'vendor.com/gpu'"),
    # -- names -----------------------------------------------------------------------------------
    Case("cli-job-name-not-dns", [*TRAIN, "--name", "Train_Job"], 2,
         "invalid Job name 'Train_Job': contains uppercase letters", "use a DNS-1123 name, e.g. 'train-job'"),
    Case("cli-job-name-too-long", [*TRAIN, "--name", "t" * 64], 2,
         f"invalid Job name '{'t' * 64}': is 64 characters long (at most 63)", f"use a DNS-1123 name, e.g. '{'t' * 63}'"),
    Case("cli-namespace-not-dns", [*TRAIN, "-n", "Team_A"], 2, "invalid namespace 'Team_A': contains uppercase letters",
         "use a DNS-1123 name, e.g. 'team-a'"),
    Case("api-env-var-name", api_env_name, ConfigError, "invalid environment variable name '1BAD'",
         "use letters, digits, '_', '-' or '.', not starting with a digit"),
    Case("api-secret-name-not-dns", api_secret_name, ConfigError, "invalid Secret name 'Team_Secrets'",
         "use lowercase letters, digits, '-' and '.'"),
    Case("api-relative-mount-path", api_relative_mount, ConfigError, "mount path 'data' must be absolute", "e.g. '/data'"),
    # -- configuration ---------------------------------------------------------------------------
    Case("cli-config-invalid-yaml", TRAIN, 2,
         "{cwd}/fairing.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'",
         "fix the file (indentation, quotes around values with ':' or '#')", setup=config("registry: [unclosed\n")),
    Case("cli-config-unknown-key", TRAIN, 2, "fairing.yaml:1: unknown setting 'regsitry'", "did you mean 'registry'?",
         setup=config("regsitry: 127.0.0.1:5000/team\n")),
    Case("cli-config-bad-value", TRAIN, 2, "fairing.yaml:1: bad value for gpus: expected a whole number",
         "gpus: number of GPUs", setup=config("gpus: many\n")),
    Case("cli-profile-undefined", [*TRAIN, "--profile", "prod"], 2,
         "profile 'prod' is not defined in {cwd}/fairing.yaml", "profiles defined there: local",
         setup=config("profiles:\n  local: {deployer: local}\n")),
    Case("cli-kubeconfig-missing", [*TRAIN, "--kubeconfig", "{cwd}/nope.kubeconfig"], 2,
         "kubeconfig {cwd}/nope.kubeconfig does not exist", "fix KUBECONFIG or the kubeconfig argument"),
    Case("cli-kube-context-unknown", [*TRAIN, "--context", "nope"], 2,
         "kubeconfig context 'nope' not found in {sa_kubeconfig}", "available contexts: fairing-sa"),
    Case("cli-env-not-key-value", [*TRAIN, "--env", "NOVALUE"], 2, "cli: bad value for env: 'NOVALUE' is not KEY=VALUE",
         "env: environment variables for the workload"),
    Case("cli-output-format", [*TRAIN, "-o", "xml"], 2, "--output must be text or json, not 'xml'",
         "use --output json for scripts"),
    # -- notebooks -------------------------------------------------------------------------------
    Case("cli-notebook-without-code-cells", ["train", "nb/empty.ipynb", *COMMON], 2,
         "notebook nb/empty.ipynb has no code cells to run",
         "add code cells (cells tagged fairing:exclude, %% cell magics and, when any cell is tagged "
         "fairing:include, untagged cells are left out)", setup=setup_markdown_only_notebook),
    Case("cli-notebook-invalid-json", ["train", "nb/broken.ipynb", *COMMON], 2,
         "notebook nb/broken.ipynb is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 35)",
         "the file is damaged or not a notebook; restore it from Jupyter's checkpoint or version control",
         setup=file("nb/broken.ipynb", '{"cells": [ {"cell_type": "code", ')),
    Case("cli-notebook-not-a-notebook", ["train", "nb/data.ipynb", *COMMON], 2,
         "nb/data.ipynb is JSON but not a Jupyter notebook (no 'cells' / 'nbformat')", "pass an .ipynb file",
         setup=file("nb/data.ipynb", '{"hello": "world"}')),
    # -- files and the context -------------------------------------------------------------------
    Case("cli-missing-entry", ["train", "missing.py", *COMMON], 2, "missing.py does not exist",
         "pass a .py file, a directory or a .ipynb notebook"),
    Case("cli-missing-requirements-file", [*TRAIN, "-r", "missing-reqs.txt"], 2,
         "requirements file missing-reqs.txt does not exist", "check the path, or pass the requirements as a list"),
    Case("cli-invalid-requirement", [*TRAIN, "-r", "numpy>="], 2,
         "requirement 'numpy>=': 'numpy>=' is not a valid requirement (Expected semicolon (after name with no version "
         "specifier) or end numpy>= ^)", "use PEP 508 form, e.g. numpy==1.26.4"),
    Case("cli-huge-context", ["train", "proj", *COMMON], 3,
         "build context is 100.0 MiB, over the 64.0 MiB limit; biggest: data.bin (100.0 MiB), train.py (9 B)",
         "add them to .fairingignore, or raise the limit with FAIRING_MAX_CONTEXT_BYTES", setup=setup_huge_context),
    Case("cli-symlink-file-escapes-context", ["train", "proj", *COMMON], 3,
         "credentials is a symlink to {outside}/credentials, outside the build context {cwd}/proj",
         "copy the file into the context, or add 'credentials' to .fairingignore", setup=setup_symlink_file),
    Case("cli-symlink-dir-escapes-context", ["train", "proj", *COMMON], 3,
         "data is a symlink to {outside}/datasets, outside the build context {cwd}/proj",
         "copy the file into the context, or add 'data' to .fairingignore", setup=setup_symlink_dir),
    Case("cli-broken-symlink", ["train", "proj", *COMMON], 3, "dangling is a broken symlink (-> /nonexistent/file)",
         "remove it or add 'dangling' to .fairingignore", setup=setup_dangling),
    Case("cli-fifo-in-context", ["train", "proj", *COMMON], 3, "pipe is a FIFO, not a regular file",
         "fix its permissions, or add 'pipe' to .fairingignore", setup=setup_fifo),
    # We are root, and root reads a mode-000 file anyway. Running as `nobody` is not possible here:
    # the interpreter lives under /root (mode 0700). So the run keeps uid 0 but drops
    # CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv --bounding-set): the kernel then applies the
    # file's mode bits to root like to anyone else.
    Case("cli-unreadable-file", ["train", "proj", *COMMON], 3, "cannot read data.csv: Permission denied",
         "fix its permissions, or add 'data.csv' to .fairingignore", setup=setup_unreadable, caps_dropped=True),
    Case("api-executable-outside-directory", api_executable_escape, ConfigError,
         "executable '../evil.py' must be a path inside {cwd}/proj", "give it relative to the directory",
         setup=lambda work, outside: _project(work)),
    Case("api-unpicklable-capture", api_unpicklable, BuildError,
         "cannot ship function api_unpicklable.<locals>.train: it captures 'lock' (a threading.Lock), which cannot be pickled; create it "
         "inside the function instead",
         "everything a shipped function uses from outside (globals, closures, defaults, arguments) is pickled"),
    Case("api-trainjob-without-entry", api_no_entry, ConfigError, "TrainJob needs an entry point",
         "pass a function, a .py file, a directory or a .ipynb"),
    # -- serving ---------------------------------------------------------------------------------
    Case("cli-deploy-model-spec", ["deploy", "x.py", *COMMON, "--deployer", "serving"], 2,
         "model 'x.py' is not 'file.py:ClassName'", "e.g. 'model.py:IrisModel', or pass the class itself"),
    Case("cli-deploy-missing-class", ["deploy", "x.py:Model", *COMMON, "--deployer", "serving"], 2,
         "x.py defines no 'Model'", "define a class with a predict() method in it"),
]


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        yield pytest.param(c, id=c.id, marks=marks)


# --- the check ---------------------------------------------------------------------------------
def _workloads_named(kube, namespace: str, *needles: str) -> list[str]:
    """Jobs/CronJobs in the namespace whose name or image mentions one of `needles`."""
    from fairing.kube.client import Kube

    k = Kube(kube.kubeconfig, namespace=namespace)
    found = []
    for kind in ("Job", "CronJob"):
        for obj in k.list("batch/v1", kind, namespace).get("items", []):
            meta = obj.get("metadata") or {}
            text = meta.get("name", "") + " " + str((meta.get("annotations") or {}).get("fairing.dev/image", ""))
            if any(n in text for n in needles):
                found.append(f"{kind}/{meta.get('name')}")
    return found


def test_bad_input_is_one_clear_error_and_creates_nothing(case, tmp_path, registry, base_image, kube, monkeypatch):
    uid = uuid.uuid4().hex[:8]
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    _write(work / "x.py", "print('x')\n")
    v = {"cwd": work, "outside": outside, "reg": registry.host, "base": base_image.docker, "ns": kube.namespace,
         "img": f"bad-{uid}", "name": f"bad-{uid}", "kubeconfig": str(kube.sa_kubeconfig),
         "sa_kubeconfig": str(kube.sa_kubeconfig)}
    if case.setup:
        case.setup(work, outside)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    want_msg = case.message.format(**v)
    want_hint = case.hint.format(**v) if case.hint else None

    if isinstance(case.run, list):
        env = clean_env(KUBECONFIG=kube.sa_kubeconfig, TMPDIR=tmpdir, **case.env)
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if case.caps_dropped else None
        r = fair(*[a.format(**v) for a in case.run], cwd=work, env=env, prefix=prefix)
        msg, hint = error_lines(r, case.expect)
        assert msg == want_msg
        assert hint is not None, "no hint line"
        if want_hint is not None:
            assert hint == want_hint
    else:
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
        monkeypatch.chdir(work)
        monkeypatch.setenv("KUBECONFIG", str(kube.sa_kubeconfig))
        for var in ("DOCKER_HOST", "FAIRING_REGISTRY", "FAIRING_DEPLOYER"):
            monkeypatch.delenv(var, raising=False)
        with pytest.raises(FairingError) as exc:
            case.run(v)
        assert type(exc.value) is case.expect, f"{type(exc.value).__name__}: {exc.value}"
        assert exc.value.message == want_msg
        assert "\n" not in exc.value.message
        assert exc.value.hint, "no hint"
        if want_hint is not None:
            assert exc.value.hint == want_hint

    # Nothing was created: no repository in the registry, no workload, no temp dir.
    pushed = tags(registry.url, f"reliability/{v['img']}")
    if pushed:
        delete_tags(registry.url, f"reliability/{v['img']}")  # don't let a known defect pile up images
    assert pushed is None, "an image was pushed"
    assert _workloads_named(kube, kube.namespace, v["img"], v["name"]) == []
    assert sorted(p.name for p in tmpdir.iterdir()) == []


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", list(_params()))


def test_the_table_has_at_least_25_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 25
    assert sum(isinstance(c.run, list) for c in CASES) >= 10 and sum(callable(c.run) for c in CASES) >= 10
