"""Releases side by side: upgrade, rollback, prune, and what an environment holds.

Every release lives in its own ``envs/<version>/``; the ``hub`` link names the
active one. An upgrade installs beside the active env and switches the link;
it records what it did in ``records/upgrades.json`` (from, to, the database
backup, when), which is what ``barehub rollback`` undoes and what ``barehub
prune`` keeps. Only root writes ``records/``: the hub's user owns ``state/``, and
root never acts on (or runs) a path that user could have recorded.

Versions are CalVer, ``YYYY.MM.N``, compared as tuples of numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import barehub
from barehub import envs, gate, install, render, safefs, settings, systemd
from barehub.envs import active_env, env_version, installed_envs, norm_name, site_packages
from barehub.layout import HUB_UNIT, Layout, NotABase

#: Site additions the upgrade applies to the new environment (see docs/upgrade.md).
SITE_REQUIREMENTS = "site-requirements.txt"
SITE_ENVIRONMENT = "site-environment.yml"


class UpgradeError(Exception):
    pass


# ------------------------------------------------------------------ upgrade records and db backups


def records(layout: Layout) -> list[dict]:
    try:
        data = json.loads(safefs.read_bytes(layout.base, layout.upgrades_file))
    except FileNotFoundError:
        return []
    except ValueError as e:
        raise UpgradeError(f"{layout.upgrades_file} is not valid JSON ({e}); fix or remove it") from None
    return data if isinstance(data, list) else []


def write_records(layout: Layout, recs: list[dict]) -> None:
    """records/upgrades.json: root's, mode 644, in a directory only root writes (0755)."""
    root = 0 if os.geteuid() == 0 else -1
    safefs.ensure_dir(layout.base, layout.records, 0o755, root, root)
    safefs.write_atomic(layout.base, layout.upgrades_file, json.dumps(recs, indent=1) + "\n", 0o644, root, root)


def add_record(layout: Layout, **fields: object) -> dict:
    rec = {"time": utc_now(), **fields}
    write_records(layout, [*records(layout), rec])
    return rec


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def last_upgrade(layout: Layout) -> dict | None:
    """The upgrade that made the active env active and was not rolled back, if any."""
    active = active_env(layout)
    if active is None:
        return None
    for rec in reversed(records(layout)):
        if rec.get("rolled_back"):
            continue
        if Path(rec.get("to_env", "")).resolve() == active.resolve():
            return rec
        return None  # a later record is about another env: the last upgrade is not this one
    return None


def rollback_target(layout: Layout) -> Path | None:
    rec = last_upgrade(layout)
    return Path(rec["from_env"]) if rec else None


def trusted_env(layout: Layout, recorded: object) -> Path:
    """The env a record names, if it is exactly BASE/envs/<version> and only root can change it.

    Root runs its bin/python: a path anywhere else, a link, or an env another
    user owns or may write is refused.
    """
    given = Path(str(recorded or ""))
    if not (_same_dir(given.parent, layout.envs) and envs.parse_version(given.name)):
        raise UpgradeError(f"{layout.upgrades_file} names the environment {str(recorded)!r}, which is not "
                           f"{layout.envs}/<version>: root runs nothing from there. Nothing was changed.")
    path = layout.env(given.name)  # only the version comes from the record
    if os.geteuid() == 0:
        for p in (layout.envs, path, path / "bin"):
            safefs.check_trusted(p, f"an environment root runs ({path})")
        # a venv's python links to the system's: wherever the links lead, only root may change it
        py = path / "bin" / "python"
        safefs.check_trusted(py, f"the python root runs ({py})", link_ok=True)
    return path


def _same_dir(recorded: Path, ours: Path) -> bool:
    """The recorded directory is ours, spelt the same or through the same links (--base /opt/... or its target)."""
    return recorded == ours or (recorded.is_absolute() and os.path.realpath(recorded) == os.path.realpath(ours))


def recorded_backup(layout: Layout, recorded: object) -> Path:
    """The db backup a record names, as state/backups/<name>: never a path elsewhere."""
    given = Path(str(recorded))
    if not _same_dir(given.parent, layout.backups) or given.name.startswith(".") or not given.name:
        raise UpgradeError(f"the database backup {given} that {layout.upgrades_file} names is not in "
                           f"{layout.backups}/: not rolling back. Nothing was changed.")
    return layout.backups / given.name


def backups_dir(layout: Layout) -> Path:
    root = 0 if os.geteuid() == 0 else -1
    safefs.ensure_dir(layout.base, layout.backups, 0o700, root, root)
    return layout.backups


def private_copy(layout: Layout, src: Path, private: Path) -> Path:
    """A consistent copy of the sqlite db `src` (in state/) in `private`, a directory only root reaches.

    state/ is the hub user's, who may fill it with links: the database (and its
    journal or write-ahead log) is read without following links, then copied
    with sqlite's backup API where nobody else can plant anything.
    """
    raw = private / "raw.sqlite"
    for suffix in ("", "-journal", "-wal"):
        try:
            data = safefs.read_bytes(layout.base, src.with_name(src.name + suffix))
        except FileNotFoundError:
            continue
        (private / f"{raw.name}{suffix}").write_bytes(data)
    out = private / src.name
    render.sqlite_copy(raw, out, read_only=False)  # a hot journal is rolled back in the private copy
    return out


@contextmanager
def _private_dir(what: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"barehub-{what}-") as tmp:
        os.chmod(tmp, 0o700)
        yield Path(tmp)


def copy_db(layout: Layout, src: Path, dst: Path) -> None:
    """A consistent copy of the sqlite db `src` at `dst` (both in state/), mode 600, written then renamed."""
    with _private_dir("db") as private:
        out = private_copy(layout, src, private)
        safefs.write_atomic(layout.base, dst, out.read_bytes(), 0o600)


def backup_db(layout: Layout, label: str) -> Path | None:
    """state/backups/jupyterhub.sqlite.<label>.<UTC time>, mode 600; None without a db."""
    if safefs.lstat(layout.base, layout.db_file) is None:
        return None
    dst = backups_dir(layout) / f"{layout.db_file.name}.{label}.{_stamp()}"
    copy_db(layout, layout.db_file, dst)
    return dst


def restore_db(layout: Layout, backup: Path) -> None:
    """Put a backup (in state/backups/) back as the hub's db, keeping the current db's owner and mode.

    No link is followed, whether planted as the backup, the db or a temporary file.
    """
    backup = recorded_backup(layout, backup)
    data = safefs.read_bytes(layout.base, backup)
    st = safefs.lstat(layout.base, layout.db_file)
    if st is not None and stat.S_ISREG(st.st_mode):
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    else:  # no db (or something planted): the hub's user gets its db back
        mode, uid, gid = 0o600, install.user_id(settings.load(layout.settings_file)["hub.user"]), -1
    safefs.write_atomic(layout.base, layout.db_file, data, mode, uid, gid)
    for suffix in ("-journal", "-wal", "-shm"):  # leftovers belong to the replaced db
        safefs.unlink(layout.base, layout.db_file.with_name(layout.db_file.name + suffix))


# ------------------------------------------------------------------ what an environment holds




@dataclass(frozen=True)
class Package:
    name: str
    version: str
    kind: str  # "conda" or "pip"
    url: str = ""
    md5: str = ""


def conda_packages(env: Path) -> dict[str, Package]:
    out = {}
    for meta in sorted((env / "conda-meta").glob("*.json")):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if "name" in data:
            out[data["name"]] = Package(data["name"], str(data.get("version", "")), "conda",
                                        data.get("url", ""), data.get("md5", ""))
    return out


def python_packages(env: Path) -> dict[str, Package]:
    """Distributions in the env's site-packages that conda did not install."""
    out = {}
    for sp in site_packages(env):
        for dist in metadata.distributions(path=[str(sp)]):
            name = dist.metadata["Name"]
            if not name:
                continue
            installer = (dist.read_text("INSTALLER") or "").strip()
            out[norm_name(name)] = Package(name, dist.version, "conda" if installer == "conda" else "pip")
    return out


def module_owner(env: Path, module: str) -> Package | None:
    """The distribution in env that provides the top-level module `module`."""
    for sp in site_packages(env):
        for dist in metadata.distributions(path=[str(sp)]):
            tops = set((dist.read_text("top_level.txt") or "").split())
            for f in dist.files or []:
                parts = f.parts
                if parts and not parts[0].endswith((".dist-info", ".egg-info", "..")):
                    tops.add(parts[0][:-3] if parts[0].endswith(".py") else parts[0])
            if module in tops:
                name = dist.metadata["Name"]
                installer = (dist.read_text("INSTALLER") or "").strip()
                return Package(name, dist.version, "conda" if installer == "conda" else "pip")
    return None


def site_additions(old: Path, new: Path) -> list[Package]:
    """Packages in the old env that the new one lacks (conda packages, then pip-only ones)."""
    old_conda, new_conda = conda_packages(old), conda_packages(new)
    missing = [p for n, p in sorted(old_conda.items()) if n not in new_conda]
    new_py = python_packages(new)
    new_names = set(new_py) | {norm_name(n) for n in new_conda}
    for key, p in sorted(python_packages(old).items()):
        if p.kind == "pip" and key not in new_names:
            missing.append(p)
    return missing


def add_command(env: Path, pkgs: list[Package]) -> list[str]:
    cmds = []
    conda = [p for p in pkgs if p.kind == "conda"]
    pip = [p for p in pkgs if p.kind == "pip"]
    if conda:
        cmds.append(f"conda install -p {env} " + " ".join(f"'{p.name}={p.version}'" for p in conda))
    if pip:
        cmds.append(f"{env}/bin/python -m pip install " + " ".join(f"'{p.name}=={p.version}'" for p in pip))
    return cmds


def missing_module_message(module: str, old_env: Path | None, new_env: Path, old_version: str | None) -> str:
    owner = module_owner(old_env, module) if old_env else None
    what = f"`{module}`"
    if owner:
        what += f" ({owner.name} {owner.version} in the active environment, installed with {owner.kind})"
        cmds = add_command(new_env, [owner])
    else:
        cmds = [f"{new_env}/bin/python -m pip install {module}   (or: conda install -p {new_env} {module})"]
    keeps = f"barehub {old_version} keeps running" if old_version else "nothing was started"
    return (f"the new environment lacks the Python package providing {what}. Add it with\n"
            + "".join(f"  {c}\n" for c in cmds)
            + f"then run the installer again with -u, or build a flavor (docs/upgrade.md).\n"
            f"Nothing was changed; {keeps}.")


# ------------------------------------------------------------------ site environment files


def apply_site_files(layout: Layout, env: Path, say: Callable[[str], None]) -> None:
    """Apply site-requirements.txt (pip) and site-environment.yml (conda) to a new env.

    They need their package source (an index, a channel or a local wheelhouse):
    when that is not reachable the step warns and the upgrade goes on; the
    check that follows says whether the configuration needs what is missing.
    """
    reqs = layout.base / SITE_REQUIREMENTS
    if os.geteuid() == 0:  # root runs pip and conda with them
        for f in (reqs, layout.base / SITE_ENVIRONMENT):
            if f.exists():
                safefs.check_trusted(f, "a site environment file root applies", link_ok=True)
    if reqs.is_file():
        cmd = [str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
               "--retries", "1", "--timeout", "15", "-r", str(reqs)]
        say(f"applying {reqs}: {' '.join(cmd)}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            say(f"warning: could not apply {reqs} (is its index reachable?):\n{_tail(r.stderr or r.stdout)}")
    envfile = layout.base / SITE_ENVIRONMENT
    if envfile.is_file():
        tool = next((t for t in (shutil.which("mamba"), shutil.which("conda"), shutil.which("micromamba"),
                                 str(env / "bin" / "conda")) if t and os.access(t, os.X_OK)), None)
        if tool is None:
            say(f"warning: {envfile} not applied: no conda, mamba or micromamba found on PATH")
            return
        if tool.endswith("micromamba"):
            cmd = [tool, "install", "-y", "-p", str(env), "-f", str(envfile)]
        else:
            cmd = [tool, "env", "update", "-p", str(env), "-f", str(envfile)]
        say(f"applying {envfile}: {' '.join(cmd)}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            say(f"warning: could not apply {envfile} (is its channel reachable?):\n{_tail(r.stderr or r.stdout)}")


def _tail(text: str, n: int = 8) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines()[-n:])


# ------------------------------------------------------------------ env export


def export(env: Path, layout: Layout) -> str:
    """The env's exact package list: conda's @EXPLICIT format, or pip requirements for a venv."""
    version = env_version(env) or "unknown"
    head = [f"# barehub {version}: environment {env}",
            f"# base {layout.base}, exported {utc_now()} by barehub {barehub.__version__}"]
    conda = conda_packages(env)
    pip_only = [p for p in python_packages(env).values() if p.kind == "pip"]
    if conda:
        subdir = next((json.loads(m.read_text()).get("subdir") for m in (env / "conda-meta").glob("*.json")), "")
        lines = head + ["# Recreate with: conda create -p NEW_PREFIX --file THIS_FILE",
                        *([f"# platform: {subdir}"] if subdir else []), "@EXPLICIT"]
        for p in sorted(conda.values(), key=lambda p: p.name):
            lines.append(f"{p.url}#{p.md5}" if p.url and p.md5 else (p.url or f"# {p.name}=={p.version}: no url recorded"))
        if pip_only:
            lines.append("# installed with pip (not part of the explicit list; add with pip install):")
            lines += [f"# pip: {p.name}=={p.version}" for p in sorted(pip_only, key=lambda p: p.name.lower())]
        return "\n".join(lines) + "\n"
    lines = head + ["# Recreate with: python -m pip install -r THIS_FILE"]
    lines += [f"{p.name}=={p.version}" for p in sorted(python_packages(env).values(), key=lambda p: p.name.lower())]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ versions, rollback, prune


def versions_table(layout: Layout) -> list[str]:
    active = active_env(layout)
    target = rollback_target(layout)
    lines = []
    for version, path in installed_envs(layout):
        marks = []
        if active and path.resolve() == active.resolve():
            marks.append("active")
        if target and path.resolve() == target.resolve():
            marks.append("rollback target")
        lines.append(f"{'*' if 'active' in marks else ' '} {version:<12} {path}"
                     + (f"  ({', '.join(marks)})" if marks else ""))
    if active and not any(active.resolve() == p.resolve() for _, p in installed_envs(layout)):
        lines.insert(0, f"* {env_version(active) or '?':<12} {active}  (active)")
    return lines


def prune(layout: Layout, keep: int, say: Callable[[str], None] = print) -> list[Path]:
    """Remove envs beyond the `keep` newest; never the active one or the rollback target."""
    if keep < 1:
        raise UpgradeError("--keep must be at least 1")
    protected = {p.resolve() for p in (active_env(layout), rollback_target(layout)) if p}
    removed = []
    for i, (version, path) in enumerate(installed_envs(layout)):
        if i < keep:
            continue
        if path.resolve() in protected:
            say(f"kept {path} ({'active' if path.resolve() == (active_env(layout) or Path()).resolve() else 'rollback target'})")
            continue
        shutil.rmtree(path)
        say(f"removed {path}")
        removed.append(path)
    if not removed:
        say("nothing to remove")
    return removed


def rollback(layout: Layout, *, no_start: bool = False, say: Callable[[str], None] = print) -> int:
    """Switch back to the env the last upgrade came from, restore its db backup, restart."""
    rec = last_upgrade(layout)
    active = active_env(layout)
    if rec is None or active is None:
        raise UpgradeError(f"nothing to roll back: no upgrade to the active environment ({active}) is recorded "
                           f"in {layout.upgrades_file}. `barehub versions` lists what is installed.")
    old_env = trusted_env(layout, rec.get("from_env"))
    if not (old_env / "bin" / "python").exists():
        raise UpgradeError(f"cannot roll back to {old_env}: it is gone (pruned or removed). Install barehub "
                           f"{rec.get('from')} again with its installer instead.")
    backup = recorded_backup(layout, rec["backup"]) if rec.get("backup") else None
    if backup is not None and safefs.lstat(layout.base, backup) is None:
        raise UpgradeError(f"the database backup {backup} of that upgrade is missing: not rolling back.")
    py = str(old_env / "bin" / "python")
    say(f"barehub rollback: {rec.get('to')} ({active}) -> {rec.get('from')} ({old_env})")

    say(f"1. check: barehub {rec.get('from')} loads {layout.settings_file} and {layout.config_d}/")
    r = subprocess.run([py, "-m", "barehub", "check", "--base", str(layout.base)], capture_output=True, text=True)
    if r.returncode:
        raise UpgradeError(f"barehub {rec.get('from')} cannot load the current configuration:\n"
                           f"{(r.stderr or r.stdout).strip()}\nNothing was changed.")

    start = not no_start and systemd.is_running()
    if start:
        say(f"2. stop {HUB_UNIT} (users' servers and the proxy keep running)")
        systemd.systemctl("stop", HUB_UNIT)
    else:
        say("2. systemd is not managing barehub here (or --no-start): nothing to stop")
    if backup is not None:
        kept = backup_db(layout, f"pre-rollback-{rec.get('to')}")
        say(f"3. database: kept the current one as {kept}; restored {backup}")
        restore_db(layout, backup)
    else:
        say("3. database: the upgrade found none, nothing to restore")
    envs.switch_link(layout.hub_link, old_env)
    say(f"4. {layout.hub_link} -> {os.readlink(layout.hub_link)}")
    rec["rolled_back"] = utc_now()
    recs = records(layout)
    for i in range(len(recs) - 1, -1, -1):
        if recs[i].get("time") == rec.get("time") and recs[i].get("to_env") == rec.get("to_env"):
            recs[i] = rec
            break
    write_records(layout, recs)
    say(f"5. re-render generated files and {'restart' if start else 'start nothing'} with barehub {rec.get('from')}:")
    cmd = [py, "-m", "barehub", "install", "--base", str(layout.base), "--prefix", str(old_env)]
    if not start:
        cmd.append("--no-start")
    sys.stdout.flush()
    r = subprocess.run(cmd, text=True)
    if r.returncode:
        raise UpgradeError(f"`{' '.join(cmd)}` failed (above). The hub link points to {old_env} and the "
                           "database is restored; fix the problem, then run that command again.")
    say(f"rolled back to barehub {rec.get('from')}")
    return 0


def upgrade_db(layout: Layout, prefix: Path, say: Callable[[str], None]) -> None:
    """`jupyterhub upgrade-db` with the new env, against the hub's own configuration.

    It runs as root and state/ is the hub user's: the database is migrated as a
    copy in a directory only root reaches (JupyterHub's own backup copy lands
    there too, beside the upgrade's backup in state/backups/), then written back
    through a directory descriptor with the db's owner and mode. A database the
    configuration moves elsewhere (another db_url) is upgraded where it is.
    """
    config = Path(barehub.__file__).resolve().parent / "jupyterhub_config.py"
    st = safefs.lstat(layout.base, layout.db_file)
    if st is None or not stat.S_ISREG(st.st_mode):
        raise UpgradeError(f"{layout.db_file} is not a regular file: not upgrading it. Look at it "
                           f"(`ls -la {layout.state}`).")
    with _private_dir("upgrade-db") as private:
        db = private_copy(layout, layout.db_file, private)
        wrapper = private / "jupyterhub_config.py"
        wrapper.write_text(
            f"# barehub upgrade-db: the hub's configuration, with the database copy in {private}\n"
            f"load_subconfig({str(config)!r})\n"
            f"if c.JupyterHub.db_url == {f'sqlite:///{layout.db_file}'!r}:\n"
            f"    c.JupyterHub.db_url = {f'sqlite:///{db}'!r}\n")
        cmd = [str(prefix / "bin" / "python"), "-m", "jupyterhub", "upgrade-db", f"--config={wrapper}"]
        env = {**os.environ, "BAREHUB_BASE": str(layout.base)}
        r = subprocess.run(cmd, cwd=private, env=env, capture_output=True, text=True)
        if r.returncode:
            raise UpgradeError(f"`{' '.join(cmd)}` failed:\n{_tail(r.stderr or r.stdout, 20)}")
        if safefs.write_atomic(layout.base, layout.db_file, db.read_bytes(), stat.S_IMODE(st.st_mode),
                               st.st_uid, st.st_gid):
            for suffix in ("-journal", "-wal", "-shm"):  # merged into the copy written back
                safefs.unlink(layout.base, layout.db_file.with_name(layout.db_file.name + suffix))


# ------------------------------------------------------------------ the upgrade


class Steps:
    """Numbered, printed steps of an upgrade."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.n = say, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        self.say(f"{self.n}. {what}")


def upgrade_gate(layout: Layout, prefix: Path, plan: envs.Plan, no_start: bool,
                 say: Callable[[str], None]) -> tuple[object, str | None]:
    """The gate, run by the new environment (this process) before anything changes.

    A package the configuration imports and the new environment lacks is named,
    with the command that adds it. Every refusal says the old hub keeps running.
    """
    keeps = f"Nothing was changed; barehub {plan.old_version} keeps running."
    try:
        current, initial_text = install.prepare(layout, prefix, no_start, {})
        report = gate.check(layout, ports=not no_start and systemd.is_running(), current=current,
                                    upgrading=True)
    except (install.InstallError, settings.SettingsError, NotABase) as e:
        raise install.InstallError(f"{e}\n{keeps}") from None
    for w in report.warnings:
        say(f"   warning: {w}")
    for p in report.problems:
        if p.missing_module:
            raise install.InstallError(f"{p.where}: {p.what}\n" + missing_module_message(
                p.missing_module, plan.old_env, prefix, plan.old_version)) from None
    if report.problems:
        raise install.InstallError("\n".join(str(p) for p in report.problems)
                                   + f"\nbarehub {plan.new_version} cannot start with this configuration. "
                                   f"Fix it, then run the installer again with -u. {keeps}")
    return current, initial_text


def upgrade(layout: Layout, prefix: Path, plan: envs.Plan, *, no_start: bool = False,
            say: Callable[[str], None] = print) -> int:
    """Install a newer release beside the active one and switch to it; see docs/upgrade.md."""
    assert plan.old_env is not None
    step = Steps(say)
    say(f"barehub upgrade: {plan.old_version} ({plan.old_env}) -> {plan.new_version} ({prefix}), base {layout.base}")
    step("site environment files")
    if not any((layout.base / n).is_file() for n in (SITE_REQUIREMENTS, SITE_ENVIRONMENT)):
        say(f"   none ({layout.base}/{SITE_REQUIREMENTS} or {SITE_ENVIRONMENT}, see docs/upgrade.md)")
    apply_site_files(layout, prefix, lambda m: say(f"   {m}"))
    step("site additions: packages in the active environment that the new one lacks")
    extra = site_additions(plan.old_env, prefix)
    if extra:
        say("   warning: these are not in the new environment and will be gone after the switch:")
        for p in extra:
            say(f"     {p.name} {p.version} ({p.kind})")
        say("   add them to the new environment (now or later) with")
        for cmd in add_command(prefix, extra):
            say(f"     {cmd}")
        say("   or keep them for good in a flavor or a site environment file (docs/upgrade.md)")
    else:
        say("   none")
    step(f"check: barehub {plan.new_version} starts with {layout.settings_file} and {layout.config_d}/")
    current, initial_text = upgrade_gate(layout, prefix, plan, no_start, say)
    say("   ok")

    managed = not no_start and systemd.is_running()
    backup = None
    try:
        if managed and systemd.unit_state(HUB_UNIT)[1] in ("active", "activating", "reloading"):
            step(f"stop {HUB_UNIT} (users' servers and the proxy keep running)")
            systemd.systemctl("stop", HUB_UNIT)
        else:
            step(f"{HUB_UNIT} is not running here: nothing to stop")
        step(f"back up the database {layout.db_file}")
        backup = backup_db(layout, f"{plan.old_version}-to-{plan.new_version}")
        say(f"   {backup} (mode 600)" if backup else "   no database yet: nothing to back up")
        step("jupyterhub upgrade-db with the new environment")
        if backup:
            upgrade_db(layout, prefix, say)
            say("   done")
        else:
            say("   no database yet: skipped")
        add_record(layout, **{"from": plan.old_version, "to": plan.new_version,
                              "from_env": str(plan.old_env), "to_env": str(prefix),
                              "backup": str(backup) if backup else None})
        say(f"   recorded in {layout.upgrades_file} (for `barehub rollback`)")
    except (UpgradeError, systemd.SystemdError, OSError) as e:
        if backup is not None:
            restore_db(layout, backup)
        if managed:
            systemd.systemctl("start", HUB_UNIT, check=False)
        raise install.InstallError(f"{e}\nThe upgrade stopped before the switch: the database was restored and "
                                   f"barehub {plan.old_version} started again.") from None
    try:
        rc = install.finish(layout, prefix, current, initial_text, no_start=no_start, overrides={}, say=say,
                            step=step)
    except Exception as e:
        if managed:  # never leave the hub stopped: start it with whatever `hub` names now
            systemd.systemctl("start", HUB_UNIT, check=False)
        switched = active_env(layout) == prefix
        back = (f"or go back with `{layout.hub_link}/bin/barehub rollback`" if switched else
                f"barehub {plan.old_version} is still active (database backup: {backup})")
        raise install.InstallError(f"{e}\nThe upgrade failed after the database was upgraded. Fix the problem "
                                   f"and run the installer again with -u, {back}.") from e
    say(f"upgraded barehub {plan.old_version} -> {plan.new_version}. "
        f"`{layout.hub_link}/bin/barehub rollback` goes back (and restores the database backup).")
    return rc
