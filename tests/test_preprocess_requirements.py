"""Requirements: explicit lists, requirements.txt (comments, continuations, -r includes) and
pyproject.toml, kept exactly as written and in order."""
from __future__ import annotations

import textwrap

import pytest

from fairing import requirements as R
from fairing.errors import ConfigError


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_explicit_list_is_kept_verbatim_and_in_order():
    reqs = ["torch==2.3.1", "numpy>=1.26,<2", "requests[socks]==2.32.3 ; python_version >= '3.8'", "numpy>=1.26,<2"]
    assert R.resolve(reqs) == ("torch==2.3.1", "numpy>=1.26,<2", "requests[socks]==2.32.3 ; python_version >= '3.8'")
    assert R.resolve(None) == ()


def test_requirements_file_with_comments_continuations_and_includes(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base/common.txt", """\
        # shared pins
        requests==2.32.3
        -r extra.txt
    """)
    write(tmp_path / "base/extra.txt", "pyyaml==6.0.1\n")
    write(tmp_path / "requirements.txt", """\
        # training deps

        numpy==1.26.4  # pinned for the image
        scikit-learn==1.5.0 \\
            ; python_version >= "3.9"
        -r base/common.txt
        --requirement=base/extra.txt
        mypkg @ https://example.invalid/mypkg-1.0.tar.gz#sha256=abc
        requests==2.32.3
    """)
    assert R.resolve(tmp_path / "requirements.txt") == (
        "numpy==1.26.4",
        'scikit-learn==1.5.0     ; python_version >= "3.9"',
        "requests==2.32.3",
        "pyyaml==6.0.1",
        "mypkg @ https://example.invalid/mypkg-1.0.tar.gz#sha256=abc",
    )
    # A relative path is taken from the base directory.
    assert R.resolve("requirements.txt", base_dir=tmp_path)[0] == "numpy==1.26.4"


def test_pyproject_dependencies(tmp_path):
    write(tmp_path / "pyproject.toml", """\
        [project]
        name = "x"
        dependencies = ["pandas==2.2.2", "pyarrow>=15"]
    """)
    assert R.resolve(tmp_path / "pyproject.toml") == ("pandas==2.2.2", "pyarrow>=15")
    (tmp_path / "dyn").mkdir()
    write(tmp_path / "dyn/pyproject.toml", '[project]\nname = "x"\ndynamic = ["dependencies"]\n')
    with pytest.raises(ConfigError, match=r"declares its dependencies as dynamic"):
        R.resolve(tmp_path / "dyn/pyproject.toml")


@pytest.mark.parametrize("content, message", [
    ("--index-url https://user:secret@pypi.example/simple\n", "pip option '--index-url' is not supported"),
    ("-e .\n", "pip option '-e' is not supported"),
    ("./vendored/pkg\n", "'./vendored/pkg' is not a valid requirement"),
    ("-r missing.txt\n", "missing.txt does not exist"),
])
def test_bad_requirement_files(tmp_path, content, message):
    write(tmp_path / "requirements.txt", content)
    with pytest.raises(ConfigError, match=message) as e:
        R.resolve(tmp_path / "requirements.txt")
    assert "secret" not in str(e.value)  # credentials in an index URL are never echoed


def test_circular_include_and_missing_file(tmp_path):
    write(tmp_path / "a.txt", "-r b.txt\n")
    write(tmp_path / "b.txt", "-r a.txt\n")
    with pytest.raises(ConfigError, match=r"includes itself through -r"):
        R.resolve(tmp_path / "a.txt")
    with pytest.raises(ConfigError) as e:
        R.resolve(tmp_path / "nope.txt")
    assert e.value.message == f"requirements file {tmp_path / 'nope.txt'} does not exist"
    with pytest.raises(ConfigError, match=r"is neither a list nor an existing file"):
        R.resolve("numpy")


def test_ensure_adds_only_missing_projects():
    assert R.ensure(("Scikit_Learn==1.5.0",), ["scikit-learn>=1", "cloudpickle==3.1.2"]) == (
        "Scikit_Learn==1.5.0", "cloudpickle==3.1.2")
