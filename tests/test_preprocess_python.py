"""The `python` preprocessor: which files ship, what runs, and the errors users hit first."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairing.context import BuildContext, write_context
from fairing.errors import BuildError, ConfigError, FairingError
from fairing.preprocessors.python import PythonPreprocessor


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def run_local(ctx: BuildContext, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Materialise the context and run its entrypoint with this interpreter, as the image would."""
    root = write_context(ctx, tmp_path / "ctx")
    argv = [sys.executable if a == "python3" else a for a in ctx.entrypoint]
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **ctx.env, **(env or {})})


def run_in_container(engine, base_image, ctx: BuildContext, tmp_path: Path, env: dict | None = None,
                     extra: dict[str, Path] | None = None) -> tuple[int, str]:
    """Run the context's entrypoint in the local base image through Podman's Docker API: the context
    is bind-mounted at its workdir (what a builder would put in a layer). `extra` copies more
    directories into the mount (e.g. a package the base image lacks)."""
    import shutil

    import docker

    root = write_context(ctx, tmp_path / "mounted")
    for dst, src in (extra or {}).items():
        shutil.copytree(src, root / dst, ignore=shutil.ignore_patterns("__pycache__"))
    client = engine.client()
    try:
        client.images.get(base_image.docker)
    except docker.errors.ImageNotFound:
        client.images.pull(base_image.docker)
    c = client.containers.create(base_image.docker, command=list(ctx.entrypoint), working_dir=ctx.workdir,
                                 environment={**ctx.env, **(env or {})},
                                 volumes={str(root): {"bind": ctx.workdir, "mode": "rw"}})
    try:
        c.start()
        code = c.wait(timeout=300)["StatusCode"]
        return code, c.logs(stdout=True, stderr=True).decode()
    finally:
        c.remove(force=True)


# -- which files ship -------------------------------------------------------------------------------

def test_single_file_ships_alone_and_runs_unbuffered(tmp_path):
    tree(tmp_path, {"job.py": "print('hi')\n", "other.py": "", "data.csv": "1,2\n"})
    ctx = PythonPreprocessor().prepare(tmp_path / "job.py", args=["--epochs", "2"])
    assert dict(ctx.files) == {"job.py": (tmp_path / "job.py").absolute()}
    assert ctx.entrypoint == ("python3", "-u", "job.py", "--epochs", "2")
    assert ctx.requirements == () and ctx.kind == "python"


def test_directory_honours_ignore_files_and_always_excluded(tmp_path):
    tree(tmp_path, {
        "train.py": "import lib.util\n",
        "lib/util.py": "",
        "lib/__pycache__/util.cpython-311.pyc": b"\0",
        "lib/stale.pyc": b"\0",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".ipynb_checkpoints/x.ipynb": "{}",
        "env/pyvenv.cfg": "home = /usr\n",          # a virtualenv under any name
        "env/lib/site.py": "",
        ".gitignore": "*.log\ndata/\n!keep.log\n",
        "run.log": "x", "keep.log": "k",
        "data/big.bin": b"\0" * 10,
        ".fairingignore": "secrets.txt\nnotes/*.md\n",
        "secrets.txt": "s", "notes/a.md": "", "notes/b.txt": "",
        "sub/.gitignore": "local.tmp\n", "sub/local.tmp": "", "sub/keep.tmp": "", "local.tmp": "",
    })
    ctx = PythonPreprocessor().prepare(tmp_path)
    assert sorted(ctx.files) == [
        ".fairingignore", ".gitignore", "keep.log", "lib/util.py", "local.tmp", "notes/b.txt",
        "sub/.gitignore", "sub/keep.tmp", "train.py",
    ]
    assert ctx.files["lib/util.py"] == (tmp_path / "lib/util.py").absolute()
    assert ctx.entrypoint == ("python3", "-u", "train.py")


def test_fairingignore_can_reinclude_what_gitignore_drops(tmp_path):
    tree(tmp_path, {"main.py": "", ".gitignore": "*.json\n", ".fairingignore": "!config.json\n",
                    "config.json": "{}", "cache.json": "{}"})
    ctx = PythonPreprocessor().prepare(tmp_path)
    assert "config.json" in ctx.files and "cache.json" not in ctx.files


@pytest.mark.parametrize("names, expected", [
    (["train.py", "main.py", "a.py"], "train.py"),
    (["main.py", "a.py"], "main.py"),
    (["__main__.py", "a.py"], "__main__.py"),
    (["only.py", "pkg/x.py"], "only.py"),
])
def test_executable_is_guessed(tmp_path, names, expected):
    tree(tmp_path, {n: "" for n in names})
    assert PythonPreprocessor().prepare(tmp_path).entrypoint[2] == expected


def test_ambiguous_directory_lists_candidates(tmp_path):
    tree(tmp_path, {"a.py": "", "b.py": "", "pkg/train.py": ""})
    with pytest.raises(ConfigError) as e:
        PythonPreprocessor().prepare(tmp_path)
    assert e.value.message == f"cannot guess which file to run in {tmp_path}: candidates are a.py, b.py"
    assert "executable='a.py'" in e.value.hint


def test_explicit_executable_in_subdirectory(tmp_path):
    tree(tmp_path, {"a.py": "", "b.py": "", "jobs/train.py": "", "jobs/.fairingignore": "skip.py\n", "jobs/skip.py": ""})
    ctx = PythonPreprocessor(executable="jobs/train.py").prepare(tmp_path)
    assert ctx.entrypoint == ("python3", "-u", "jobs/train.py")
    with pytest.raises(ConfigError, match=r"executable jobs/skip.py is excluded by an ignore rule"):
        PythonPreprocessor().prepare(tmp_path, executable="jobs/skip.py")
    with pytest.raises(ConfigError, match=r"executable nope.py does not exist"):
        PythonPreprocessor().prepare(tmp_path, executable="nope.py")


def test_missing_entry(tmp_path):
    with pytest.raises(ConfigError) as e:
        PythonPreprocessor().prepare(tmp_path / "nope.py")
    assert e.value.message == f"{tmp_path / 'nope.py'} does not exist"


def test_requirements_txt_is_picked_up_in_a_directory(tmp_path):
    tree(tmp_path, {"main.py": "", "requirements.txt": "# pinned\nnumpy==1.26.4\nrequests>=2  # http\n"})
    ctx = PythonPreprocessor().prepare(tmp_path)
    assert ctx.requirements == ("numpy==1.26.4", "requests>=2")
    # An explicit list wins over the file.
    assert PythonPreprocessor(requirements=["six==1.16.0"]).prepare(tmp_path).requirements == ("six==1.16.0",)


def test_include_adds_files_next_to_a_single_script(tmp_path):
    tree(tmp_path, {"job.py": "", "helpers/h.py": "", "helpers/__pycache__/h.pyc": b"", "cfg.yaml": ""})
    ctx = PythonPreprocessor(include=["helpers", "cfg.yaml"]).prepare(tmp_path / "job.py")
    assert sorted(ctx.files) == ["cfg.yaml", "helpers/h.py", "job.py"]


# -- refusals ---------------------------------------------------------------------------------------

def test_oversized_context_names_biggest_paths(tmp_path, monkeypatch):
    tree(tmp_path, {"train.py": "x", "data/a.bin": b"\0" * 3000, "data/b.bin": b"\0" * 2000,
                    "model.pt": b"\0" * 1500, "small.txt": b"\0" * 10})
    with pytest.raises(BuildError) as e:
        PythonPreprocessor(max_context_bytes=4096).prepare(tmp_path)
    assert e.value.message == ("build context is 6.4 KiB, over the 4.0 KiB limit; "
                               "biggest: data/ (4.9 KiB), model.pt (1.5 KiB), small.txt (10 B)")
    assert e.value.hint == "add them to .fairingignore, or raise the limit with FAIRING_MAX_CONTEXT_BYTES"
    # The env var sets the default limit; following the hint makes it pass.
    monkeypatch.setenv("FAIRING_MAX_CONTEXT_BYTES", "4096")
    with pytest.raises(BuildError, match="over the 4.0 KiB limit"):
        PythonPreprocessor().prepare(tmp_path)
    (tmp_path / ".fairingignore").write_text("data/\n")
    assert "model.pt" in PythonPreprocessor().prepare(tmp_path).files


def test_symlink_escaping_the_context_is_refused(tmp_path):
    outside = tree(tmp_path / "outside", {"secret": "s"})
    proj = tree(tmp_path / "proj", {"main.py": "", "inner/real.txt": "r"})
    (proj / "alias.txt").symlink_to(proj / "inner/real.txt")  # inside: shipped as the file
    ctx = PythonPreprocessor().prepare(proj)
    assert ctx.files["alias.txt"] == (proj / "alias.txt").absolute()
    (proj / "leak").symlink_to(outside)
    with pytest.raises(BuildError) as e:
        PythonPreprocessor().prepare(proj)
    assert e.value.message == f"leak is a symlink to {outside.resolve()}, outside the build context {proj.resolve()}"
    (proj / "leak").unlink()
    (proj / "dangling").symlink_to(proj / "gone")
    with pytest.raises(BuildError, match=r"^dangling is a broken symlink"):
        PythonPreprocessor().prepare(proj)


def test_fifo_is_refused(tmp_path):
    tree(tmp_path, {"main.py": ""})
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BuildError) as e:
        PythonPreprocessor().prepare(tmp_path)
    assert e.value.message == "pipe is a FIFO, not a regular file"
    assert "add 'pipe' to .fairingignore" in e.value.hint


def test_unreadable_file_is_refused():
    import shutil
    import tempfile

    import pathspec  # noqa: F401  (imported before dropping privileges)

    # root reads any file, so as root the check runs with the effective uid of `nobody`.
    root = Path(tempfile.mkdtemp(prefix="fairing-unreadable-"))
    try:
        os.chmod(root, 0o755)
        tree(root, {"main.py": "", "private.key": "k"})
        (root / "private.key").chmod(0o000)
        dropped = os.geteuid() == 0
        if dropped:
            os.seteuid(65534)
        try:
            with pytest.raises(BuildError) as e:
                PythonPreprocessor().prepare(root)
        finally:
            if dropped:
                os.seteuid(0)
        assert e.value.message == "cannot read private.key: Permission denied"
        assert e.value.hint == "fix its permissions, or add 'private.key' to .fairingignore"
    finally:
        shutil.rmtree(root)


# -- running ----------------------------------------------------------------------------------------

def test_entrypoint_runs_locally(tmp_path):
    proj = tree(tmp_path / "proj", {"train.py": "import sys\nfrom lib.util import f\nprint(f(), sys.argv[1:])\n",
                                    "lib/__init__.py": "", "lib/util.py": "def f():\n    return 'util ok'\n"})
    ctx = PythonPreprocessor(args=["a b"]).prepare(proj)
    r = run_local(ctx, tmp_path)
    assert (r.returncode, r.stdout) == (0, "util ok ['a b']\n"), r.stderr


def test_entrypoint_runs_in_container(engine, base_image, tmp_path):
    proj = tree(tmp_path / "proj", {
        "main.py": "import platform, sys\nfrom lib.util import f\nprint(f(), platform.python_version_tuple()[:2], sys.argv[1:])\n",
        "lib/__init__.py": "", "lib/util.py": "def f():\n    return 'util ok'\n",
        ".gitignore": "data/\n", "data/x.bin": "never shipped"})
    ctx = PythonPreprocessor(args=["--lr", "0.1"]).prepare(proj)
    code, logs = run_in_container(engine, base_image, ctx, tmp_path)
    assert code == 0, logs
    assert logs == "util ok ('3', '11') ['--lr', '0.1']\n"
    assert not (tmp_path / "mounted/data").exists()


def test_failing_script_exit_code_survives_in_container(engine, base_image, tmp_path):
    proj = tree(tmp_path / "proj", {"main.py": "import sys\nprint('bye')\nsys.exit(3)\n"})
    code, logs = run_in_container(engine, base_image, PythonPreprocessor().prepare(proj), tmp_path)
    assert (code, logs) == (3, "bye\n")


def test_error_is_a_fairing_error(tmp_path):
    # The CLI relies on every refusal being a FairingError with a hint.
    with pytest.raises(FairingError) as e:
        PythonPreprocessor().prepare(tmp_path)
    assert e.value.hint
