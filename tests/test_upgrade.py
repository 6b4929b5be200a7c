"""Upgrades, refusals, rollback, prune and env export, on real directory trees.

Like tests/test_install.py, an "environment" is a prefix whose bin/python runs
this interpreter with barehub from the checkout (the current version). Older and
newer releases are prefixes named for other versions: the running code is
always the installer's release, the `hub` link names the active one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from barehub import envs, upgrade
from barehub.layout import Layout
from conftest import require_root
from helpers import REPO, version

OLD, NEW = "2026.10.0", version()  # NEW is what the checkout (the "installer") is
NEWER = "2099.1.0"


def fake_env(base: Path, v: str, pip: dict[str, str] | None = None, conda: dict[str, str] | None = None) -> Path:
    """envs/<v> with a python that runs this interpreter, and the given dist-infos / conda-meta records."""
    prefix = base / "envs" / v
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    py = prefix / "bin" / "python"
    py.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO / "src"}" exec {sys.executable} "$@"\n')
    py.chmod(0o755)
    sp = prefix / "lib" / "python3.11" / "site-packages"
    sp.mkdir(parents=True, exist_ok=True)
    for name, ver in (pip or {}).items():
        di = sp / f"{name.replace('-', '_')}-{ver}.dist-info"
        di.mkdir()
        (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
        (di / "INSTALLER").write_text("pip\n")
        (di / "RECORD").write_text(f"{name.replace('-', '_')}/__init__.py,,\n")
    for name, ver in (conda or {}).items():
        (prefix / "conda-meta").mkdir(exist_ok=True)
        (prefix / "conda-meta" / f"{name}-{ver}-0.json").write_text(json.dumps({
            "name": name, "version": ver, "build": "0", "subdir": "linux-64",
            "url": f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{ver}-0.conda", "md5": "0" * 32}))
    return prefix


def barehub(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("BAREHUB_")}
    e.update(PYTHONPATH=str(REPO / "src"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "barehub", *args], capture_output=True, text=True, env=e,
                          timeout=180)


def install(base: Path, v: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return barehub("install", "--base", str(base), "--prefix", str(base / "envs" / v), "--no-start", *extra)


def make_db(base: Path) -> None:
    """A real JupyterHub database with a user in it."""
    from jupyterhub import orm

    db = orm.new_session_factory(f"sqlite:///{base / 'state' / 'jupyterhub.sqlite'}")()
    db.add(orm.User(name="alice"))
    db.commit()
    db.close()


def users(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("select name from users order by name")]


def link(base: Path) -> str:
    return os.readlink(base / "hub")


@pytest.fixture
def old_base(tmp_path):
    """A base installed with the release OLD, a user in the db, a site addition, a config.d file."""
    require_root()
    base = tmp_path / "barehub"
    fake_env(base, OLD, pip={"site-extra": "1.2"}, conda={"python": "3.11.9", "slurm-tools": "1.0"})
    r = install(base, OLD)
    assert r.returncode == 0, r.stderr
    assert link(base) == f"envs/{OLD}"
    (base / "jupyterhub_config.d" / "10-site.py").write_text("c.Spawner.default_url = '/lab'\n")
    make_db(base)
    return base


# ---------------------------------------------------------------- pure functions


def test_calver_compares_as_numbers():
    assert envs.parse_version("2026.9.0") < envs.parse_version("2026.10.0") < envs.parse_version("2027.1.0")
    assert envs.parse_version("2026.11.1") > envs.parse_version("2026.11.0")
    assert envs.parse_version("latest") is None and envs.parse_version("2026.11") is None


def test_decide(tmp_path):
    base = tmp_path / "b"
    layout = Layout.at(base)
    new = fake_env(base, NEW)
    assert envs.decide(layout, new).kind == "fresh"
    (base / "hub").symlink_to(f"envs/{NEW}")
    assert envs.decide(layout, new).kind == "repair"
    for other, kind in ((OLD, "upgrade"), (NEWER, "older"), ("custom-env", "repair")):
        env = fake_env(base, other)
        (base / "hub").unlink()
        (base / "hub").symlink_to(f"envs/{other}")
        plan = envs.decide(layout, new)
        assert (plan.kind, plan.old_env) == (kind, env), other


def test_site_additions_and_commands(tmp_path):
    old = fake_env(tmp_path, OLD, pip={"site-extra": "1.2", "jinja2": "3.1.6"}, conda={"python": "3.11", "slurm-tools": "1.0"})
    new = fake_env(tmp_path, NEW, pip={"Jinja2": "3.1.6"}, conda={"python": "3.12"})
    extra = upgrade.site_additions(old, new)
    assert [(p.name, p.version, p.kind) for p in extra] == [("slurm-tools", "1.0", "conda"), ("site-extra", "1.2", "pip")]
    assert upgrade.add_command(new, extra) == [
        f"conda install -p {new} 'slurm-tools=1.0'", f"{new}/bin/python -m pip install 'site-extra==1.2'"]
    owner = upgrade.module_owner(old, "site_extra")
    assert (owner.name, owner.version, owner.kind) == ("site-extra", "1.2", "pip")


def test_env_export_pip_and_conda(tmp_path):
    layout = Layout.at(tmp_path)
    venv = fake_env(tmp_path, OLD, pip={"b-pkg": "2.0", "A-pkg": "1.0"})
    text = upgrade.export(venv, layout)
    assert text.startswith(f"# barehub {OLD}: environment {venv}\n")
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["A-pkg==1.0", "b-pkg==2.0"]
    conda = fake_env(tmp_path, NEW, pip={"site-extra": "1.2"}, conda={"python": "3.11.9"})
    lines = upgrade.export(conda, layout).splitlines()
    at = lines.index("@EXPLICIT")
    assert "# platform: linux-64" in lines[:at]
    assert lines[at + 1] == "https://conda.anaconda.org/conda-forge/linux-64/python-3.11.9-0.conda#" + "0" * 32
    assert "# pip: site-extra==1.2" in lines


# ---------------------------------------------------------------- the upgrade path


def test_upgrade_installs_beside_switches_and_keeps_everything(old_base):
    base = old_base
    fake_env(base, NEW, conda={"python": "3.12.1"})
    generated = base / "generated"
    proxy_before = {p: (generated / p).read_bytes() for p in ("jupyterhub-proxy.service", "traefik.toml")}
    keep = {p: p.read_bytes() for p in [*(base / "jupyterhub_config.d").iterdir(), base / "barehub.toml",
                                        base / "state" / "jupyterhub_cookie_secret"]}

    r = install(base, NEW)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # step by step, in order
    order = ["1. site environment files", "2. site additions", "3. check:", "back up the database",
             "jupyterhub upgrade-db", "re-render the generated files", f"switch {base / 'hub'}"]
    positions = [out.index(s) for s in order]
    assert positions == sorted(positions), out
    # site additions: listed with the command that adds them
    assert "site-extra 1.2 (pip)" in out and "slurm-tools 1.0 (conda)" in out
    assert "python 3.11.9" not in out, "in both envs (another version): not a site addition"
    assert f"{base}/envs/{NEW}/bin/python -m pip install 'site-extra==1.2'" in out
    assert f"conda install -p {base}/envs/{NEW} 'slurm-tools=1.0'" in out
    # switched; the old env is still there
    assert link(base) == f"envs/{NEW}" and (base / "envs" / OLD / "bin" / "python").exists()
    # nothing of the admin's is lost; the db still has its user
    assert {p: p.read_bytes() for p in keep} == keep
    assert users(base / "state" / "jupyterhub.sqlite") == ["alice"]
    # the backup: timestamped, mode 600, in a mode 700 directory, and recorded
    (backup,) = (base / "state" / "backups").iterdir()
    assert backup.name.startswith(f"jupyterhub.sqlite.{OLD}-to-{NEW}.")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    assert users(backup) == ["alice"]
    (rec,) = json.loads((base / "records" / "upgrades.json").read_text())
    assert rec["from"] == OLD and rec["to"] == NEW and rec["backup"] == str(backup)
    assert rec["from_env"] == str(base / "envs" / OLD) and rec["to_env"] == str(base / "envs" / NEW)
    # the proxy's rendered files carry no version: byte-identical, so the proxy is left alone
    assert {p: (generated / p).read_bytes() for p in proxy_before} == proxy_before
    assert "nothing was started" in out

    v = barehub("versions", "--base", str(base))
    assert v.returncode == 0, v.stderr
    assert v.stdout.splitlines() == [f"* {NEW:<12} {base / 'envs' / NEW}  (active)",
                                     f"  {OLD:<12} {base / 'envs' / OLD}  (rollback target)"]

    # the same release again repairs in place: no new record, no new backup
    r = install(base, NEW)
    assert r.returncode == 0 and "barehub upgrade" not in r.stdout
    # so does `hub/bin/barehub install`, whose default prefix is the link itself
    r = barehub("install", "--base", str(base), "--prefix", str(base / "hub"), "--no-start")
    assert r.returncode == 0 and "barehub upgrade" not in r.stdout, r.stderr
    assert link(base) == f"envs/{NEW}"
    assert len(json.loads((base / "records" / "upgrades.json").read_text())) == 1
    assert len(list((base / "state" / "backups").iterdir())) == 1


def test_upgrade_with_a_missing_module_changes_nothing(old_base):
    base = old_base
    fake_env(base, NEW)
    bad = base / "jupyterhub_config.d" / "20-slurm.py"
    bad.write_text("import site_extra\nc.Spawner.cmd = site_extra.CMD\n")
    # the old env has it (a site addition); the new one does not
    sp = base / "envs" / OLD / "lib" / "python3.11" / "site-packages"
    (sp / "site_extra").mkdir()
    (sp / "site_extra" / "__init__.py").write_text("CMD = ['x']\n")
    from test_install import snapshot
    before = snapshot(base)
    r = install(base, NEW)
    assert r.returncode == 1
    assert f"{bad}:1: ModuleNotFoundError" in r.stderr
    assert "the new environment lacks the Python package providing `site_extra` (site-extra 1.2" in r.stderr
    assert f"{base}/envs/{NEW}/bin/python -m pip install 'site-extra==1.2'" in r.stderr
    assert f"Nothing was changed; barehub {OLD} keeps running." in r.stderr
    assert snapshot(base) == before


def test_upgrade_with_a_spawner_class_the_new_env_lacks_changes_nothing(old_base):
    base = old_base
    fake_env(base, NEW)
    (base / "jupyterhub_config.d" / "20-spawner.py").write_text(
        "c.JupyterHub.spawner_class = 'nosuchspawner_pkg.SlurmSpawner'\n"
        "c.JupyterHub.authenticator_class = 'shared-password'\n")
    from test_install import snapshot
    before = snapshot(base)
    r = install(base, NEW)
    assert r.returncode == 1
    assert "c.JupyterHub.spawner_class = 'nosuchspawner_pkg.SlurmSpawner'" in r.stderr
    assert "providing `nosuchspawner_pkg`" in r.stderr and "Nothing was changed" in r.stderr
    assert snapshot(base) == before


def test_older_release_is_refused(tmp_path):
    require_root()
    base = tmp_path / "barehub"
    fake_env(base, NEWER)
    assert barehub("install", "--base", str(base), "--prefix", str(base / "envs" / NEWER), "--no-start").returncode == 0
    fake_env(base, NEW)  # what the older installer extracted
    from test_install import snapshot
    before = snapshot(base)
    r = install(base, NEW)
    assert r.returncode == 1
    assert f"barehub {NEWER} is active" in r.stderr and f"this installer is the older {NEW}" in r.stderr
    assert "barehub rollback" in r.stderr and f"rm -rf {base / 'envs' / NEW}" in r.stderr
    assert snapshot(base) == before


def test_site_requirements_file_is_applied_or_warned_about(old_base):
    base = old_base
    fake_env(base, NEW)
    (base / "site-requirements.txt").write_text("no-such-package-barehub-test==1.0\n")
    r = barehub("install", "--base", str(base), "--prefix", str(base / "envs" / NEW), "--no-start",
                env={"PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stderr
    assert f"applying {base / 'site-requirements.txt'}" in r.stdout
    assert "warning: could not apply" in r.stdout
    assert link(base) == f"envs/{NEW}"


# ---------------------------------------------------------------- rollback and prune


def test_rollback_restores_env_and_db(old_base):
    base = old_base
    fake_env(base, NEW)
    assert install(base, NEW).returncode == 0
    # a change after the upgrade, which the rollback undoes (the db goes back to the backup)
    with sqlite3.connect(base / "state" / "jupyterhub.sqlite") as c:
        c.execute("update users set name = 'bob' where name = 'alice'")
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert link(base) == f"envs/{OLD}"
    assert users(base / "state" / "jupyterhub.sqlite") == ["alice"]
    kept = [p for p in (base / "state" / "backups").iterdir() if ".pre-rollback-" in p.name]
    assert len(kept) == 1 and users(kept[0]) == ["bob"] and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    (rec,) = json.loads((base / "records" / "upgrades.json").read_text())
    assert rec["rolled_back"]
    assert (base / "jupyterhub_config.d" / "10-site.py").exists()
    # nothing left to roll back
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 1 and "nothing to roll back" in r.stderr
    v = barehub("versions", "--base", str(base)).stdout
    assert f"* {OLD:<12}" in v and "rollback target" not in v
    # and forward again
    assert install(base, NEW).returncode == 0 and link(base) == f"envs/{NEW}"


def test_prune_keeps_active_and_rollback_target(tmp_path):
    require_root()
    base = tmp_path / "barehub"
    for v in ("2026.1.0", "2026.2.0", OLD):
        fake_env(base, v)
    assert install(base, OLD).returncode == 0
    fake_env(base, NEW)
    assert install(base, NEW).returncode == 0
    fake_env(base, NEWER)  # extracted, never activated
    r = barehub("prune", "--base", str(base), "--keep", "1")
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in (base / "envs").iterdir())
    assert left == sorted([NEWER, NEW, OLD])  # newest kept; active and rollback target never removed
    assert f"removed {base / 'envs' / '2026.1.0'}" in r.stdout and f"kept {base / 'envs' / NEW} (active)" in r.stdout
    assert f"kept {base / 'envs' / OLD} (rollback target)" in r.stdout
    r = barehub("prune", "--base", str(base), "--keep", "0")
    assert r.returncode == 1 and "at least 1" in r.stderr


def test_env_export_cli(old_base, tmp_path):
    out = tmp_path / "env.lock"
    r = barehub("env", "export", "--base", str(old_base), "-o", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text.startswith(f"# barehub {OLD}: environment {old_base / 'envs' / OLD}")
    assert "@EXPLICIT" in text and "# pip: site-extra==1.2" in text
