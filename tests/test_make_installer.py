"""`make installer`: without constructor it fails at once with one clear line; with it, each
installer and platform gets an output directory of its own, and what constructor wrote there
is checked (scripts/release.py check-build). `make version` sets the version on a copy."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _path_without(program: str) -> str:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not os.access(os.path.join(d, program), os.X_OK))


def test_installer_without_constructor_fails_fast_with_one_line():
    env = dict(os.environ, PATH=_path_without("constructor"))
    assert shutil.which("constructor", path=env["PATH"]) is None
    make = shutil.which("make")
    start = time.monotonic()
    result = subprocess.run(
        [make, "-C", str(ROOT), "--no-print-directory", "installer"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 5, f"took {elapsed:.1f} s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "constructor" in lines[0] and "conda-forge" in lines[0]
    # Nothing was started: no channel build, no output directory.
    assert result.stdout == ""


def test_installer_with_constructor_builds_channel_then_runs_it(tmp_path):
    # A stand-in constructor on PATH; `make -n` only prints what would run.
    fake = tmp_path / "constructor"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{_path_without('constructor')}")
    result = subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", "-n", "installer"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    run = (f"BAREHUB_CHANNEL={ROOT}/build/channel constructor construct/ "
           "--output-dir build/installer/barehub-linux-64 --platform linux-64")
    assert run in lines, result.stdout
    check = lines[lines.index(run) + 1]
    assert check.endswith("scripts/release.py check-build build/installer/barehub-linux-64 --platform linux-64 "), check
    # `make channel` runs first and writes the same directory construct.yaml reads.
    before = lines[: lines.index(run)]
    assert any("make" in line and "channel" in line for line in before), result.stdout
    assert any("build/channel" in line for line in before), result.stdout


def venv_python(path: Path) -> None:
    """This interpreter under another name (a symlink would lose the venv: pyvenv.cfg is found
    beside the name it is started by)."""
    path.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)


def fake_constructor_on_path(tmp_path: Path) -> dict:
    """A constructor stand-in on PATH, with a python beside it (the test venv's, which has
    ruamel.yaml and Jinja2 like constructor's): `make -n` only prints what would run."""
    (tmp_path / "constructor").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "constructor").chmod(0o755)
    venv_python(tmp_path / "python")
    return dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{_path_without('constructor')}")


def make_n(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "-n", "installer", *args],
                          env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, out", [
    ((), "build/installer/barehub-linux-64"),
    (("FLAVOR=slurm",), "build/installer/barehub-slurm-linux-64"),
    (("FLAVOR=systemdspawner", "PLATFORM=linux-ppc64le", "CONDA_STANDALONE=/x/conda.exe"),
     "build/installer/barehub-systemdspawner-linux-ppc64le"),
])
def test_each_installer_and_platform_has_its_own_output_directory(tmp_path, args, out):
    r = make_n(fake_constructor_on_path(tmp_path), *args)
    assert r.returncode == 0, r.stderr
    build = next(line for line in r.stdout.splitlines() if line.startswith(("BAREHUB_CHANNEL=", "constructor ")))
    assert f"--output-dir {out} " in build + " ", build
    platform = out.rsplit("-linux-", 1)[1]
    assert f"--platform linux-{platform}" in build
    if "CONDA_STANDALONE=/x/conda.exe" in args:
        assert build.endswith("--conda-exe /x/conda.exe"), build
    assert f"rm -rf {out}" in r.stdout, "a rebuild starts from an empty directory"


@pytest.mark.parametrize("args, message", [
    (("PLATFORM=linux-aarch64",), "this is a cross build and needs CONDA_STANDALONE="),
    (("PLATFORM=win-64",), "PLATFORM=win-64 is not one barehub ships"),
])
def test_a_build_that_cannot_work_stops_with_one_line(tmp_path, args, message):
    r = make_n(fake_constructor_on_path(tmp_path), *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


FAKE_CONSTRUCTOR = """#!{python}
# Writes what constructor 3.16 writes into --output-dir (tests/constructor_outputs.py).
import argparse, sys
sys.path[:0] = [{tests!r}, {scripts!r}]
import constructor_outputs, lockcheck
p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--output-dir", required=True)
p.add_argument("--platform", required=True)
p.add_argument("--conda-exe")
a = p.parse_args()
from pathlib import Path
info = lockcheck.parse_construct(Path(a.dir) / "construct.yaml", platform=a.platform)
constructor_outputs.write_outputs(Path(a.output_dir), info["name"], info["version"], a.platform, info["specs"])
"""


def test_base_and_flavor_builds_keep_their_own_outputs(tmp_path):
    """constructor writes fixed names (lockfile.base.txt, ...): two builds, two directories,
    and each is checked by scripts/release.py check-build at the end of `make installer`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    venv_python(bin_dir / "python")
    fake = bin_dir / "constructor"
    fake.write_text(FAKE_CONSTRUCTOR.format(python=sys.executable, tests=str(ROOT / "tests"),
                                            scripts=str(ROOT / "scripts")))
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{_path_without('constructor')}")
    outs = {}
    for flavor in ("", "slurm"):
        r = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "installer",
                            *([f"FLAVOR={flavor}"] if flavor else [])],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        name = f"barehub-{flavor}" if flavor else "barehub"
        outs[name] = ROOT / "build" / "installer" / f"{name}-linux-64"
        assert f"ok: build/installer/{name}-linux-64" in r.stdout, r.stdout[-2000:]
    base, slurm = (outs["barehub"] / "lockfile.base.txt").read_text(), (outs["barehub-slurm"] / "lockfile.base.txt").read_text()
    assert "batchspawner" in slurm and "batchspawner" not in base, "the flavor's build did not overwrite the base's"
    assert "installer-name: barehub\n" in base and "installer-name: barehub-slurm\n" in slurm
    for d in outs.values():
        assert len(list(d.glob("*.sh"))) == 1
        shutil.rmtree(d)
