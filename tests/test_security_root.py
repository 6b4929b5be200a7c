"""Root-run commands treat the hub user's files as hostile (issue 12, a shared head node).

With `hub.user` an unprivileged user, state/ belongs to that user. Each test
installs a base as root with such a hub user, plants what that user can plant
(run as that user with setpriv), then runs the root command and checks that
nothing outside the user's own files changed and that no path the user chose
was followed or executed. The bases live in a world-traversable directory
under /var/tmp (root-owned, sticky parent), never under the clone.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import fake_prefix, require_root
from helpers import REPO, local_user, version
from test_upgrade import NEW, OLD, fake_env, make_db, users

HUB_USER = "bh-sec-hub"


@pytest.fixture(scope="module")
def hub_user():
    require_root()
    with local_user(HUB_USER) as name:
        yield pwd.getpwnam(name)


@pytest.fixture
def top():
    """A root-owned, world-traversable directory (0755) under /var/tmp (1777): a trusted place for a base."""
    require_root()
    d = Path(tempfile.mkdtemp(prefix="barehub-sec-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def barehub(*args: str, umask: int | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`barehub ...` as root, from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAREHUB_")}
    env["PYTHONPATH"] = str(REPO / "src")
    # JupyterHub migrates a database with the `alembic` command of its environment
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run([sys.executable, "-m", "barehub", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def as_user(user: pwd.struct_passwd, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script as that user, with only its own uid, gid and no other groups."""
    r = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                        "--", "/bin/sh", "-ec", script], capture_output=True, text=True, cwd="/",
                       env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir}, timeout=60)
    assert r.returncode == 0, f"as {user.pw_name}: {script}\n{r.stdout}{r.stderr}"
    return r


def install(base: Path, v: str | None = None, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return barehub("install", "--base", str(base), "--prefix", str(base / "envs" / (v or version())),
                   "--no-start", umask=umask)


def hub_base(top: Path, hub_user: pwd.struct_passwd, v: str | None = None) -> Path:
    """A base installed as root whose hub runs as the unprivileged hub_user."""
    base = top / "barehub"
    if v is None:
        fake_prefix(base)
    else:
        fake_env(base, v)
    (base / "barehub.toml").write_text(f'[hub]\nuser = "{hub_user.pw_name}"\n')
    r = install(base, v)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (base / "state").stat().st_uid == hub_user.pw_uid
    return base


def victim_dir(top: Path) -> tuple[Path, os.stat_result]:
    """A root-owned directory (0755) with a root-owned file in it, outside the base."""
    v = top / "victim"
    v.mkdir(mode=0o755)
    v.chmod(0o755)
    (v / "file").write_text("root's\n")
    (v / "file").chmod(0o644)
    return v, v.stat()


def unchanged(path: Path, before: os.stat_result) -> None:
    st = path.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode)), f"{path} was changed through a link"


# ------------------------------------------------------------------ 1. links in state/


def test_reinstall_does_not_follow_links_the_hub_user_planted_in_state(top, hub_user):
    base = hub_base(top, hub_user)
    victim, before = victim_dir(top)
    state = base / "state"
    # state/proxy (root's, in the hub user's state/) swapped for the user's own directory,
    # whose `rules` is a link to a root-owned directory
    as_user(hub_user, f"cd {state} && mv proxy proxy.mine && mkdir evil && ln -s {victim} evil/rules "
                      f"&& ln -s {state}/evil proxy")
    r = install(base)
    unchanged(victim, before)
    assert sorted(p.name for p in victim.iterdir()) == ["file"]  # nothing written through the link
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{state / 'proxy'} is a symbolic link" in r.stderr and "rm " in r.stderr

    # the same link one level down: state/proxy is root's again, the user owns rules/
    as_user(hub_user, f"cd {state} && rm proxy && mv proxy.mine proxy")
    assert install(base).returncode == 0
    rules = state / "proxy" / "rules"
    assert rules.stat().st_uid == hub_user.pw_uid
    # a link at a secret's name: never followed (nothing is made through it), and named
    as_user(hub_user, f"cd {state} && rm jupyterhub_cookie_secret && ln -s {victim}/secret jupyterhub_cookie_secret")
    r = install(base)
    assert r.returncode == 1 and f"{state / 'jupyterhub_cookie_secret'} is not a regular file" in r.stderr, r.stderr
    assert not (victim / "secret").exists()
    unchanged(victim, before)
    assert (victim / "file").read_text() == "root's\n"


def test_a_fifo_the_hub_user_planted_does_not_hang_install(top, hub_user):
    """root reads what it renders before replacing it: a FIFO there (rules/ is the user's) must not block."""
    base = hub_base(top, hub_user)
    rules = base / "state" / "proxy" / "rules"
    as_user(hub_user, f"cd {rules} && rm -f barehub-tls.toml && mkfifo barehub-tls.toml")
    (base / "barehub.toml").write_text(f'[hub]\nuser = "{hub_user.pw_name}"\n\n[https]\nmode = "letsencrypt"\n'
                                       'domains = ["hub.example.org"]\nemail = "admin@example.org"\n')
    r = barehub("install", "--base", str(base), "--prefix", str(base / "envs" / version()), "--no-start",
                timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_ISREG((rules / "barehub-tls.toml").lstat().st_mode)
    # nor FIFOs as its secret and its database, for the check root runs (the gate reads both)
    as_user(hub_user, f"cd {base}/state && rm proxy_api_password && mkfifo proxy_api_password "
                      f"&& mkfifo jupyterhub.sqlite")
    r = barehub("check", "--base", str(base), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: {base}/state/jupyterhub.sqlite: is not a regular file" in r.stdout


def test_render_proxy_does_not_remove_or_write_through_links_in_state(top, hub_user):
    base = hub_base(top, hub_user)
    victim, before = victim_dir(top)
    (victim / "key.pem").write_text("root's key\n")
    state = base / "state"
    # render-proxy removes the TLS copies HTTPS no longer needs: through a link, root's own files
    as_user(hub_user, f"cd {state} && mv proxy proxy.mine && mkdir evil && ln -s {victim} evil/tls "
                      f"&& ln -s {victim} evil/rules && ln -s {state}/evil proxy")
    r = barehub("render-proxy", "--base", str(base))
    assert (victim / "key.pem").read_text() == "root's key\n", "render-proxy removed a file through a link"
    assert sorted(p.name for p in victim.iterdir()) == ["file", "key.pem"]
    unchanged(victim, before)
    assert r.returncode == 1 and f"{state / 'proxy'} is a symbolic link" in r.stderr, r.stdout + r.stderr
    assert "traefik keeps its last good configuration" in r.stderr


# ------------------------------------------------------------------ 2. rollback runs no path the user recorded


def evil_env(top: Path, where: Path, hub_user: pwd.struct_passwd, marker: Path) -> Path:
    """What the hub user can make in its state/: an "environment" whose python leaves a marker."""
    env = where / "evil-env"
    as_user(hub_user, f"mkdir -p {env}/bin && printf '#!/bin/sh\\nid -u > {marker}\\nexit 0\\n' > {env}/bin/python "
                      f"&& chmod 755 {env}/bin/python")
    return env


def test_rollback_never_runs_an_environment_the_hub_user_recorded(top, hub_user):
    base = hub_base(top, hub_user)
    active = base / "envs" / version()
    marker = top / "marker"
    marker.touch()
    marker.chmod(0o666)
    marker.write_text("")
    env = evil_env(top, base / "state", hub_user, marker)
    record = [{"time": "2026-01-01T00:00:00Z", "from": "2026.1.0", "to": version(), "from_env": str(env),
               "to_env": str(active), "backup": None}]
    # state/upgrades.json is the hub user's to write
    as_user(hub_user, f"printf '%s' '{json.dumps(record)}' > {base / 'state' / 'upgrades.json'}")
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert marker.read_text() == "", "root ran the python the hub user recorded"
    assert r.returncode == 1 and "nothing to roll back" in r.stderr, r.stdout + r.stderr
    assert os.readlink(base / "hub") == f"envs/{version()}"

    # records/ is root's (0755, files 0644): and even a record there runs only BASE/envs/<version>
    base_records = base / "records"
    base_records.mkdir(mode=0o755)
    (base_records / "upgrades.json").write_text(json.dumps(record))
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 1 and "is not " in r.stderr and f"{base / 'envs'}/<version>" in r.stderr, r.stderr
    assert marker.read_text() == ""
    # an env under envs/ that another user may change is refused as well
    old = fake_env(base, "2026.1.0")
    os.chown(old / "bin", hub_user.pw_uid, -1)
    record[0]["from_env"] = str(old)
    (base_records / "upgrades.json").write_text(json.dumps(record))
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 1 and f"{old / 'bin'}" in r.stderr and HUB_USER in r.stderr, r.stderr
    assert os.readlink(base / "hub") == f"envs/{version()}"
    # its python may link elsewhere (a venv's does), but not to what the hub user can change
    os.chown(old / "bin", 0, -1)
    (old / "bin" / "python").unlink()
    (old / "bin" / "python").symlink_to(env / "bin" / "python")
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 1 and f"the python root runs ({old / 'bin' / 'python'})" in r.stderr, r.stderr
    assert HUB_USER in r.stderr and marker.read_text() == ""


# ------------------------------------------------------------------ 3. the database: backup, upgrade-db, restore


def upgraded_base(top: Path, hub_user: pwd.struct_passwd) -> Path:
    base = hub_base(top, hub_user, OLD)
    make_db(base)
    os.chown(base / "state" / "jupyterhub.sqlite", hub_user.pw_uid, hub_user.pw_gid)
    fake_env(base, NEW)
    return base


def test_upgrade_db_migrates_a_private_copy_and_follows_no_link(top, hub_user):
    base = upgraded_base(top, hub_user)
    victim, _ = victim_dir(top)
    vfile = victim / "file"
    vbefore = vfile.stat()
    db = base / "state" / "jupyterhub.sqlite"
    # the database one migration behind (JupyterHub's last one adds spawners.display_name)
    with sqlite3.connect(db) as c:
        c.execute("alter table spawners drop column display_name")
        c.execute("update alembic_version set version_num = 'ff1860e38070'")
    c.close()
    # what the old code made private by name (jupyterhub's own copies: jupyterhub.sqlite.*)
    as_user(hub_user, f"ln -s {vfile} {base}/state/jupyterhub.sqlite.planted")
    r = install(base, NEW)
    unchanged(vfile, vbefore)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(base / "hub") == f"envs/{NEW}"
    with sqlite3.connect(db) as c:
        assert c.execute("select version_num from alembic_version").fetchall() == [("f460b0348206",)]
        assert "display_name" in [row[1] for row in c.execute("pragma table_info(spawners)")]
    c.close()
    assert users(db) == ["alice"]
    st = db.lstat()
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (hub_user.pw_uid, 0o644)
    # JupyterHub's own backup copy was made beside the private copy, not by root in state/
    assert sorted(p.name for p in (base / "state").iterdir() if p.name.startswith("jupyterhub.sqlite.")) == [
        "jupyterhub.sqlite.planted"]


def test_rollback_restores_the_database_without_following_planted_links(top, hub_user):
    base = upgraded_base(top, hub_user)
    victim, before = victim_dir(top)
    vfile = victim / "file"
    vbefore = vfile.stat()
    state = base / "state"
    r = install(base, NEW)
    assert r.returncode == 0, r.stdout + r.stderr
    # the temporary file of the restore
    with sqlite3.connect(state / "jupyterhub.sqlite") as c:
        c.execute("update users set name = 'bob' where name = 'alice'")
    as_user(hub_user, f"ln -s {vfile} {state}/.jupyterhub.sqlite.restore")
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert vfile.read_bytes() == b"root's\n", "the restore wrote through the planted link"
    unchanged(vfile, vbefore)
    unchanged(victim, before)
    db = state / "jupyterhub.sqlite"
    assert not db.is_symlink() and users(db) == ["alice"]
    st = db.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (hub_user.pw_uid, 0o644)  # the db's owner and mode kept


def test_upgrade_never_migrates_a_database_the_hub_user_linked_to(top, hub_user):
    base = upgraded_base(top, hub_user)
    victim = top / "root-only.sqlite"
    with sqlite3.connect(victim) as c:
        c.execute("create table secrets (v text)")
        c.execute("insert into secrets values ('root only')")
    c.close()
    victim.chmod(0o600)
    before = victim.read_bytes()
    state = base / "state"
    as_user(hub_user, f"cd {state} && mv jupyterhub.sqlite mine.sqlite && ln -s {victim} jupyterhub.sqlite")
    r = install(base, NEW)
    assert victim.read_bytes() == before, "root's upgrade-db wrote to the database the hub user linked to"
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{state / 'jupyterhub.sqlite'} is a symbolic link" in r.stderr
    assert os.readlink(base / "hub") == f"envs/{OLD}"
    backups = state / "backups"
    assert not any(b"root only" in p.read_bytes() for p in backups.iterdir()) if backups.exists() else True


def test_rollback_restores_no_file_the_hub_user_named_as_the_backup(top, hub_user):
    base = upgraded_base(top, hub_user)
    assert install(base, NEW).returncode == 0
    secret = top / "root-only.txt"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    # the hub user rewrites the upgrade record it can write: "the backup" is a root-only file
    record = [{"time": "2026-01-01T00:00:00Z", "from": OLD, "to": NEW, "from_env": str(base / "envs" / OLD),
               "to_env": str(base / "envs" / NEW), "backup": str(secret)}]
    upgrades = base / "state" / "upgrades.json"
    as_user(hub_user, f"rm -f {upgrades} && printf '%s' '{json.dumps(record)}' > {upgrades}")
    r = barehub("rollback", "--base", str(base), "--no-start")
    db = base / "state" / "jupyterhub.sqlite"
    assert b"root's secret" not in db.read_bytes(), "the rollback gave the hub user a root-only file as its db"
    assert r.returncode == 0, r.stdout + r.stderr  # the real record, in records/, was rolled back
    assert users(db) == ["alice"] and os.readlink(base / "hub") == f"envs/{OLD}"
    # a record in records/ naming a backup elsewhere is refused too
    assert install(base, NEW).returncode == 0
    recs = json.loads((base / "records" / "upgrades.json").read_text())
    recs[-1]["backup"] = str(secret)
    (base / "records" / "upgrades.json").write_text(json.dumps(recs))
    r = barehub("rollback", "--base", str(base), "--no-start")
    assert r.returncode == 1 and f"{secret} that" in r.stderr and "is not in" in r.stderr, r.stdout + r.stderr
    assert os.readlink(base / "hub") == f"envs/{NEW}"


def test_upgrade_refuses_a_backups_link_the_hub_user_planted(top, hub_user):
    base = upgraded_base(top, hub_user)
    victim, before = victim_dir(top)
    state = base / "state"
    as_user(hub_user, f"ln -s {victim} {state}/backups")
    r = install(base, NEW)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{state / 'backups'} is a symbolic link" in r.stderr
    assert "stopped before the switch" in r.stderr
    unchanged(victim, before)
    assert sorted(p.name for p in victim.iterdir()) == ["file"]
    assert os.readlink(base / "hub") == f"envs/{OLD}"


# ------------------------------------------------------------------ 4. a base or config.d another user controls


def evil_config_d(hub_user: pwd.struct_passwd, config_d: Path, marker: Path, *, replace: bool) -> None:
    move = f"mv {config_d} {config_d}.old && mkdir {config_d} && " if replace else ""
    as_user(hub_user, move + f"printf 'import os\\nopen(\"{marker}\", \"w\").write(str(os.getuid()))\\n' "
                             f"> {config_d}/99-mine.py")


def fresh_marker(top: Path) -> Path:
    marker = top / "marker"
    marker.unlink(missing_ok=True)
    marker.touch()
    marker.chmod(0o666)
    return marker


def test_a_base_the_hub_user_owns_is_refused(top, hub_user):
    base = hub_base(top, hub_user)
    marker = fresh_marker(top)
    os.chown(base, hub_user.pw_uid, hub_user.pw_gid)  # e.g. the base made by that user
    evil_config_d(hub_user, base / "jupyterhub_config.d", marker, replace=True)
    barehub("check", "--base", str(base))
    assert marker.read_text() == "", "root ran a config.d file the hub user wrote"
    for cmd in (["check"], ["render-proxy"], ["install", "--prefix", str(base / "envs" / version()), "--no-start"],
                ["rollback", "--no-start"], ["prune", "--keep", "1"]):
        r = barehub(*cmd, "--base", str(base))
        assert r.returncode == 1, (cmd, r.stdout + r.stderr)
        assert f"{base} (the barehub base) is owned by {HUB_USER}" in r.stderr, (cmd, r.stderr)
        assert f"chown root:root {base}" in r.stderr and "chmod go-w" in r.stderr
    assert marker.read_text() == "", "root ran a config.d file the hub user wrote"


def test_a_base_below_a_directory_others_may_write_is_refused(top, hub_user):
    shared = top / "shared"
    shared.mkdir()
    base = hub_base(shared, hub_user)
    marker = fresh_marker(top)
    shared.chmod(0o777)  # not sticky: anyone may swap the base for their own
    as_user(hub_user, f"cd {shared} && mv barehub theirs && mkdir -p barehub/jupyterhub_config.d && touch barehub/barehub.toml")
    evil_config_d(hub_user, base / "jupyterhub_config.d", marker, replace=False)
    r = barehub("check", "--base", str(base))
    assert marker.read_text() == "", "root ran a config.d file of a base another user swapped in"
    assert r.returncode == 1 and f"{shared} (above the barehub base) is owned by root, mode drwxrwxrwx" in r.stderr, r.stderr
    assert f"chmod go-w {shared}" in r.stderr
    # root's own base back in place: the world-writable parent alone is refused
    as_user(hub_user, f"cd {shared} && rm -r barehub && mv theirs barehub")
    r = barehub("check", "--base", str(base))
    assert r.returncode == 1 and f"{shared} (above the barehub base)" in r.stderr, r.stderr
    # a root-owned sticky directory above (like /tmp) is fine when what follows is root's
    shared.chmod(0o1777)
    r = barehub("check", "--base", str(base))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_base_that_is_a_link_is_refused(top, hub_user):
    base = hub_base(top, hub_user)
    link = top / "link"
    link.symlink_to(base)
    r = barehub("check", "--base", str(link))
    assert r.returncode == 1 and f"{link} (the barehub base) is a symbolic link" in r.stderr, r.stderr
    assert str(base) in r.stderr


def test_config_d_files_root_runs_must_be_roots(top, hub_user):
    base = hub_base(top, hub_user)
    config_d = base / "jupyterhub_config.d"
    marker = fresh_marker(top)
    evil = config_d / "99-mine.py"
    evil.write_text(f"import os\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    os.chown(evil, hub_user.pw_uid, hub_user.pw_gid)  # "let the hub user manage its config"
    r = barehub("check", "--base", str(base))
    assert marker.read_text() == "", "root ran a config.d file the hub user owns"
    assert r.returncode == 1 and f"{evil} (a jupyterhub_config.d file root runs) is owned by {HUB_USER}" in r.stderr, r.stderr
    assert marker.read_text() == ""
    os.chown(evil, 0, 0)
    evil.chmod(0o666)
    r = barehub("check", "--base", str(base))
    assert marker.read_text() == ""
    assert r.returncode == 1 and "-rw-rw-rw-" in r.stderr and f"chmod go-w {evil}" in r.stderr, r.stderr
    evil.chmod(0o644)
    config_d.chmod(0o777)
    r = barehub("check", "--base", str(base))
    assert r.returncode == 1 and f"{config_d} (jupyterhub_config.d/, whose files root runs)" in r.stderr, r.stderr
    assert marker.read_text() == ""
    config_d.chmod(0o755)
    r = barehub("check", "--base", str(base))
    assert r.returncode == 0, r.stdout + r.stderr
    assert marker.read_text() == "0"  # root's own file runs


# ------------------------------------------------------------------ 5. modes whatever the umask

MODES = {".": 0o755, "barehub.toml": 0o644, "jupyterhub_config.d": 0o755, "jupyterhub_config.d/README.md": 0o644,
         "generated": 0o755, "generated/jupyterhub.service": 0o644, "generated/jupyterhub-proxy.service": 0o644,
         "generated/traefik.toml": 0o644, "state": 0o700, "state/proxy": 0o711, "state/proxy/rules": 0o2750,
         "state/proxy/acme": 0o700, "state/proxy/tls": 0o750, "state/jupyterhub_cookie_secret": 0o600,
         "state/proxy_api_password": 0o600}


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_install_sets_every_mode_whatever_the_umask(top, hub_user, umask):
    prefix = fake_prefix(top / "env-holder")  # outside the base: install creates the base itself
    base = top / "srv" / "barehub"  # and the directory above it
    r = barehub("install", "--base", str(base), "--prefix", str(prefix), "--no-start", umask=umask)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(base.parent.stat().st_mode) == 0o755
    got = {rel: stat.S_IMODE((base / rel).lstat().st_mode) for rel in MODES}
    assert got == MODES, {rel: oct(m) for rel, m in got.items() if m != MODES[rel]}
    # traefik (the proxy user) can read its static configuration
    proxy = pwd.getpwnam("barehub-proxy")
    assert "entryPoints" in as_user(proxy, f"cat {base}/generated/traefik.toml").stdout
