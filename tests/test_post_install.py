"""post_install.sh under constructor's contract: its variables, cwd $PREFIX, `set -eu`, re-runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_root
from helpers import REPO, constructor_env, run_post_install, version

SCRIPT = REPO / "post_install" / "post_install.sh"


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test installs Debian's shellcheck)")
    r = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def make_prefix(prefix: Path) -> Path:
    """A prefix whose python runs this interpreter with barehub from the checkout,
    and records the cwd and arguments it was started with."""
    (prefix / "bin").mkdir(parents=True)
    py = prefix / "bin" / "python"
    py.write_text(
        "#!/bin/sh\n"
        f'pwd > "{prefix}/cwd"\n'
        f'printf "%s\\n" "$@" > "{prefix}/args"\n'
        f'PYTHONPATH="{REPO / "src"}" exec {sys.executable} "$@"\n'
    )
    py.chmod(0o755)
    return prefix


def args_of(prefix: Path) -> list[str]:
    return (prefix / "args").read_text().split("\n")[:-1]


@pytest.fixture
def root_only():
    require_root()


def test_base_is_derived_from_the_default_prefix_shape(tmp_path, root_only):
    v = version()
    prefix = make_prefix(tmp_path / "opt" / "barehub" / "envs" / v)
    r = run_post_install(prefix, constructor_env(prefix, v, extra={"BAREHUB_NO_START": "1"}))
    assert r.returncode == 0, r.stderr
    base = tmp_path / "opt" / "barehub"
    assert args_of(prefix) == ["-m", "barehub", "install", "--base", str(base), "--prefix", str(prefix), "--no-start"]
    assert (prefix / "cwd").read_text().strip() == str(prefix), "constructor runs the hook in $PREFIX"
    assert (base / "barehub.toml").is_file() and os.readlink(base / "hub") == f"envs/{v}"


def test_rerun_like_installer_u_is_idempotent(tmp_path, root_only):
    v = version()
    prefix = make_prefix(tmp_path / "b" / "envs" / v)
    env = constructor_env(prefix, v, extra={"BAREHUB_NO_START": "1"})
    assert run_post_install(prefix, env).returncode == 0
    (tmp_path / "b" / "jupyterhub_config.d" / "10-mine.py").write_text("c.Spawner.default_url = '/lab'\n")
    secret = (tmp_path / "b" / "state" / "jupyterhub_cookie_secret").read_text()
    r = run_post_install(prefix, constructor_env(prefix, v, force=True, extra={"BAREHUB_NO_START": "1"}))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "jupyterhub_config.d" / "10-mine.py").exists()
    assert (tmp_path / "b" / "state" / "jupyterhub_cookie_secret").read_text() == secret


def test_barehub_base_overrides_any_prefix(tmp_path, root_only):
    v = version()
    prefix = make_prefix(tmp_path / "somewhere" / "else")
    base = tmp_path / "site-base"
    r = run_post_install(prefix, constructor_env(prefix, v, extra={"BAREHUB_BASE": str(base), "BAREHUB_NO_START": "1"}))
    assert r.returncode == 0, r.stderr
    assert args_of(prefix)[:5] == ["-m", "barehub", "install", "--base", str(base)]
    assert os.readlink(base / "hub") == str(prefix)


def test_other_prefix_without_base_is_a_clear_error(tmp_path):
    v = version()
    prefix = make_prefix(tmp_path / "miniforge")
    r = run_post_install(prefix, constructor_env(prefix, v, installer_path="/root/barehub.sh"))
    assert r.returncode == 1
    assert f"cannot tell the base directory from the prefix {prefix}" in r.stderr
    assert f"BASE/envs/{v}" in r.stderr and "BAREHUB_BASE=/path/to/base" in r.stderr
    assert "/root/barehub.sh" in r.stderr
    assert not (prefix / "args").exists(), "barehub must not run"


def test_version_mismatch_between_prefix_and_installer_is_refused(tmp_path):
    prefix = make_prefix(tmp_path / "opt" / "barehub" / "envs" / "2020.01.0")
    r = run_post_install(prefix, constructor_env(prefix, version()))
    assert r.returncode == 1 and "cannot tell the base directory" in r.stderr


@pytest.mark.parametrize("missing", ["PREFIX", "INSTALLER_VER"])
def test_missing_constructor_variables_stop_under_set_u(tmp_path, missing):
    prefix = make_prefix(tmp_path / "b" / "envs" / version())
    env = constructor_env(prefix, version())
    del env[missing]
    r = run_post_install(prefix, env)
    assert r.returncode != 0 and missing in r.stderr
    assert not (prefix / "args").exists()


def test_barehub_failure_fails_the_hook(tmp_path, root_only):
    """A failing `barehub install` must make constructor report the hook failed."""
    v = version()
    base = tmp_path / "b"
    prefix = make_prefix(base / "envs" / v)
    (base / "barehub.toml").write_text("[proxy]\nhttp_prot = 1\n")
    r = run_post_install(prefix, constructor_env(prefix, v, extra={"BAREHUB_NO_START": "1"}))
    assert r.returncode != 0 and "unknown key proxy.http_prot" in r.stderr
