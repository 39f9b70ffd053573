"""Settings: CLI/args > env FAIRING_* > config file (profile > top level) > defaults, each value
with its source; config file discovery; clear errors for bad files. No services needed."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fairing import settings
from fairing.errors import ConfigError

ENV: dict = {}  # an empty environment: no FAIRING_* from the machine running the tests


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_when_nothing_is_configured(tmp_path):
    s = settings.load(cwd=tmp_path, environ=ENV)
    assert s.registry is None and s.deployer is None and s.gpus == 0 and s.local_mode == "auto"
    assert s.source("registry") == "default"
    assert s.file is None


def test_precedence_cli_over_env_over_profile_over_file(tmp_path):
    write(tmp_path / "fairing.yaml", """\
        registry: file.example/team
        namespace: from-file
        cpu: "1"
        memory: 1Gi
        profiles:
          dev:
            namespace: from-profile
            memory: 2Gi
            cpu: "3"
        """)
    env = {"FAIRING_PROFILE": "dev", "FAIRING_MEMORY": "4Gi", "FAIRING_CPU": "5"}
    s = settings.load({"cpu": "7"}, cwd=tmp_path, environ=env)
    assert s.registry == "file.example/team" and s.source("registry").endswith("fairing.yaml:1")
    assert s.namespace == "from-profile" and "profile dev" in s.source("namespace")
    assert s.memory == "4Gi" and s.source("memory") == "env FAIRING_MEMORY"
    assert s.cpu == "7" and s.source("cpu") == "cli"
    assert s.profile == "dev"


def test_file_found_from_a_subdirectory_and_pyproject_table(tmp_path):
    write(tmp_path / "pyproject.toml", """\
        [project]
        name = "x"
        [tool.fairing]
        registry = "py.example/team"
        requirements = ["numpy==1.26.4"]
        [tool.fairing.profiles.gpu]
        gpus = 2
        """)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    s = settings.load(cwd=sub, environ=ENV, profile="gpu")
    assert s.file == tmp_path / "pyproject.toml"
    assert s.registry == "py.example/team" and s.requirements == ["numpy==1.26.4"]
    assert s.gpus == 2 and "profile gpu" in s.source("gpus")


def test_fairing_yaml_wins_over_pyproject_in_the_same_directory(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.fairing]\nregistry = 'a/b'\n")
    write(tmp_path / "fairing.yaml", "registry: c/d\n")
    assert settings.load(cwd=tmp_path, environ=ENV).registry == "c/d"


def test_env_values_are_parsed(tmp_path):
    env = {"FAIRING_ENV": "A=1,B=x=y", "FAIRING_REQUIREMENTS": "six==1.17.0, attrs==23.2.0",
           "FAIRING_GPUS": "1", "FAIRING_SCHEDULE": "0  3 * * *", "FAIRING_UNRELATED": "ignored"}
    s = settings.load(cwd=tmp_path, environ=env)
    assert s.env == {"A": "1", "B": "x=y"}
    assert s.requirements == ["six==1.17.0", "attrs==23.2.0"]
    assert s.gpus == 1 and s.schedule == "0 3 * * *"


def test_the_workload_marker_is_not_read_as_a_setting(tmp_path):
    # Every workload fairing starts has FAIRING_RUNTIME=1; fairing called inside one (a notebook
    # server pod submitting a Job) once read it as the trainjob runtime "1" and refused to deploy a Job.
    s = settings.load(cwd=tmp_path, environ={"FAIRING_RUNTIME": "1"})
    assert s.runtime is None
    assert settings.load(cwd=tmp_path, environ={"FAIRING_TRAINJOB_RUNTIME": "mpi"}).runtime == "mpi"
    from fairing.runtime import RUNTIME_ENV

    assert RUNTIME_ENV not in {k.env for k in settings.KEYS.values()}


def test_kubeconfig_in_file_is_relative_to_the_file(tmp_path):
    write(tmp_path / "fairing.yaml", "kubeconfig: conf/kube.yaml\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    assert settings.load(cwd=sub, environ=ENV).kubeconfig == str(tmp_path / "conf" / "kube.yaml")


def test_bad_yaml_names_file_and_line(tmp_path):
    write(tmp_path / "fairing.yaml", "registry: a\nnamespace: [unclosed\ncpu: 1\n")
    with pytest.raises(ConfigError) as e:
        settings.load(cwd=tmp_path, environ=ENV)
    assert "fairing.yaml:" in e.value.message and "invalid YAML" in e.value.message
    line = int(e.value.message.split("fairing.yaml:")[1].split(":")[0])
    assert line in (2, 3, 4)
    assert e.value.hint


def test_unknown_key_suggests_the_right_one_with_its_line(tmp_path):
    write(tmp_path / "fairing.yaml", "registry: a\nnamespce: x\n")
    with pytest.raises(ConfigError) as e:
        settings.load(cwd=tmp_path, environ=ENV)
    assert "fairing.yaml:2" in e.value.message and "'namespce'" in e.value.message
    assert "namespace" in e.value.hint


def test_bad_value_type(tmp_path):
    write(tmp_path / "a" / "fairing.yaml", "gpus: lots\n")
    with pytest.raises(ConfigError, match=r"fairing.yaml:1: bad value for gpus"):
        settings.load(cwd=tmp_path / "a", environ=ENV)
    with pytest.raises(ConfigError, match="env FAIRING_GPUS"):
        settings.load(cwd=tmp_path, environ={"FAIRING_GPUS": "-1"})


def test_bad_schedule_and_env_items(tmp_path):
    with pytest.raises(ConfigError, match="cron expression"):
        settings.load({"schedule": "every night"}, cwd=tmp_path, environ=ENV)
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        settings.load({"env": ["NOEQUALS"]}, cwd=tmp_path, environ=ENV)


def test_unknown_profile_lists_the_defined_ones(tmp_path):
    write(tmp_path / "fairing.yaml", "profiles:\n  local: {deployer: local}\n  dev: {deployer: job}\n")
    with pytest.raises(ConfigError) as e:
        settings.load(cwd=tmp_path, environ=ENV, profile="prod")
    assert "'prod'" in e.value.message and "dev, local" in e.value.hint


def test_profile_without_any_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no fairing.yaml"):
        settings.load(cwd=tmp_path, environ={"FAIRING_PROFILE": "dev"})


def test_profile_chosen_in_the_file(tmp_path):
    write(tmp_path / "fairing.yaml", "profile: local\nprofiles:\n  local:\n    deployer: local\n")
    s = settings.load(cwd=tmp_path, environ=ENV)
    assert s.deployer == "local" and s.profile == "local"


def test_init_text_is_a_valid_config_with_both_profiles(tmp_path):
    (tmp_path / "fairing.yaml").write_text(settings.init_text())
    assert settings.load(cwd=tmp_path, environ=ENV, profile="local").deployer == "local"
    assert settings.load(cwd=tmp_path, environ=ENV, profile="dev-cluster").deployer == "job"
    # every key is documented in the file (commented out)
    text = settings.init_text()
    for key in settings.KEYS:
        if key not in ("dry_run", "output"):
            assert f"# {key}:" in text


def run_fair(*args, cwd, env=None):
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "fairing.cli", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=60)


def test_fair_config_show_prints_values_and_sources(tmp_path):
    write(tmp_path / "fairing.yaml", "registry: file.example/team\nprofiles:\n  dev: {namespace: ns-dev}\n")
    r = run_fair("config", "show", "--profile", "dev", "--cpu", "2", cwd=tmp_path,
                 env={"FAIRING_MEMORY": "3Gi"})
    assert r.returncode == 0, r.stderr
    lines = {l.split()[0]: l for l in r.stdout.splitlines() if l and not l.startswith("#")}
    assert "file.example/team" in lines["registry"] and "fairing.yaml:1" in lines["registry"]
    assert "ns-dev" in lines["namespace"] and "profile dev" in lines["namespace"]
    assert "3Gi" in lines["memory"] and "env FAIRING_MEMORY" in lines["memory"]
    assert lines["cpu"].split()[1] == "2" and lines["cpu"].endswith("cli")
    assert lines["deployer"].endswith("default")


def test_fair_config_show_json(tmp_path):
    import json

    r = run_fair("config", "show", "-o", "json", "--registry", "r.example/x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["settings"]["registry"] == {"value": "r.example/x", "source": "cli"}
    assert data["file"] is None


@pytest.mark.slow
def test_fair_init_writes_a_commented_file_once(tmp_path):
    r = run_fair("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "fairing.yaml").read_text()
    assert text.startswith("# fairing configuration")
    r = run_fair("config", "show", "--profile", "local", cwd=tmp_path)
    assert r.returncode == 0 and "profile local" in r.stdout
    r = run_fair("init", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: {tmp_path / 'fairing.yaml'} already exists",
                                     "hint: pass --force to overwrite it"]
    assert run_fair("init", "--force", cwd=tmp_path).returncode == 0


def test_fair_with_a_broken_config_file_says_where(tmp_path):
    write(tmp_path / "fairing.yaml", "registry: a\n  bad: indent\n")
    r = run_fair("config", "show", cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.splitlines()
    assert len(err) == 2 and err[0].startswith("error: ") and "fairing.yaml:2" in err[0]
    assert err[1].startswith("hint: ") and "Traceback" not in r.stderr


def test_process_knobs_are_read_in_settings_at_call_time(monkeypatch, tmp_path):
    """FAIRING_* variables that tune the process (not settings keys) are read by settings.py when
    asked, so a variable set after import counts; the modules that use them ask it."""
    from fairing.oci.cache import cache_root
    from fairing.oci.layer import compression, workers
    from fairing.runs.store import default_path

    for var in ("FAIRING_CACHE", "FAIRING_RUNS", "FAIRING_JOBS", "FAIRING_LAYER_COMPRESSION", "FAIRING_BYTECODE",
                "FAIRING_MAX_CONTEXT_BYTES", "FAIRING_PROGRESS", "FAIRING_DEBUG", "FAIRING_RUNTIME"):
        monkeypatch.delenv(var, raising=False)
    assert (settings.jobs(), settings.layer_compression(), settings.bytecode(), settings.max_context_bytes(),
            settings.progress(), settings.debug(), settings.in_runtime()) == (None, None, None, None, None, False, False)
    monkeypatch.setenv("FAIRING_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and default_path() == tmp_path / "c" / "runs" / "runs.db"
    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path) + "/")
    assert default_path() == tmp_path / "runs.db"
    monkeypatch.setenv("FAIRING_JOBS", "3")
    assert workers() == 3
    monkeypatch.setenv("FAIRING_JOBS", "none")  # not a positive number: every core, as before
    assert settings.jobs() is None
    monkeypatch.setenv("FAIRING_LAYER_COMPRESSION", " gzip ")
    assert compression(None).name == "gzip"
    monkeypatch.setenv("FAIRING_PROGRESS", "0")
    assert settings.progress() is False
    monkeypatch.setenv("FAIRING_DEBUG", "1")
    assert settings.debug()
    monkeypatch.setenv("FAIRING_MAX_CONTEXT_BYTES", "lots")
    with pytest.raises(ConfigError, match="FAIRING_MAX_CONTEXT_BYTES='lots' is not a number of bytes"):
        settings.max_context_bytes()


def test_debug_is_a_value_of_the_process_not_an_environment_variable(monkeypatch, tmp_path, capsys):
    """`fair --debug` used to write FAIRING_DEBUG=1 into os.environ, where every child process
    and local workload inherited it; now it is a flag in fairing.messages."""
    import os
    import warnings

    from fairing import messages
    from fairing.cli import main

    monkeypatch.delenv("FAIRING_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # no fairing.yaml around
    # main() installs the CLI's message routing for its process: undone after this test
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(messages, "_sink", messages._sink)
    monkeypatch.setattr(messages, "_debug", messages._debug)
    with pytest.raises(SystemExit):
        main(["config", "show", "--debug"])
    assert messages.debugging() and "FAIRING_DEBUG" not in os.environ
    with pytest.raises(SystemExit):
        main(["config", "show"])
    assert not messages.debugging()
