"""`make installer` without constructor fails at once with one clear line."""

import os
import shutil
import subprocess
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
    run = f"BAREHUB_CHANNEL={ROOT}/build/channel constructor construct/ --output-dir build/installer"
    assert run in lines, result.stdout
    # `make channel` runs first and writes the same directory construct.yaml reads.
    before = lines[: lines.index(run)]
    assert any("make" in line and "channel" in line for line in before), result.stdout
    assert any("build/channel" in line for line in before), result.stdout
