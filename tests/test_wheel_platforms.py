"""Which wheels fit an image: the one list of pip --platform values every builder uses, checked
against packaging's own list for this machine and against what real pip picks from real PyPI."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from fairing.builders.platforms import platform_tags
from fairing.errors import BuildError, ConfigError


def test_glibc_list_is_packagings_list_from_2_17_up():
    """For the running machine, our list equals the manylinux part of packaging.tags' list (the
    one pip itself uses), down to 2_17 and its manylinux2014 alias; pip widens that alias further."""
    from packaging import tags

    libc, version = platform.libc_ver()
    arch = platform.machine()
    if libc != "glibc" or arch not in ("x86_64", "aarch64"):
        pytest.skip(f"needs a glibc x86_64/aarch64 host to compare with packaging (this is {libc} {arch})")
    theirs = [t for t in tags.platform_tags() if t.startswith("manylinux")]
    ours = platform_tags({"architecture": arch}, version)
    cut = theirs.index(f"manylinux2014_{arch}") + 1
    assert ours == theirs[:cut]
    assert not any(t.startswith("linux_") for t in ours)  # one machine's builds never go in an image


def test_musl_arm_and_bad_input():
    alpine = {"architecture": "arm64", "config": {"Labels": {"org.fairing.musl": "1.2"}}}
    assert platform_tags(alpine) == ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64", "musllinux_1_0_aarch64"]
    assert platform_tags({"architecture": "arm", "variant": "v7"}, "2.31")[-1] == "manylinux2014_armv7l"
    assert platform_tags({"architecture": "amd64"})[0] == "manylinux_2_28_x86_64"  # the default glibc
    with pytest.raises(BuildError, match="architecture 'mips'"):
        platform_tags({"architecture": "mips"})
    with pytest.raises(ConfigError, match="glibc version '2'"):
        platform_tags({"architecture": "amd64"}, "2")


@pytest.mark.parametrize("config,wheel_platform", [
    ({"architecture": "amd64"}, "manylinux_2_17_x86_64"),
    ({"architecture": "arm64"}, "manylinux_2_17_aarch64"),
    ({"architecture": "amd64", "config": {"Labels": {"org.fairing.musl": "1.2"}}}, "musllinux_1_1_x86_64"),
])
@pytest.mark.slow
def test_pip_picks_the_wheel_for_the_image_not_the_host(tmp_path, config, wheel_platform):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--dest", str(tmp_path), "--quiet",
           "--disable-pip-version-check", "MarkupSafe==2.1.5"]
    for tag in platform_tags(config):
        cmd += ["--platform", tag]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = [p.name for p in tmp_path.glob("*.whl")]
    assert wheel_platform in wheel, wheel
