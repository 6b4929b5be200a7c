"""`barehub backup` and `barehub restore` on real bases (fake environments, as in
tests/test_install.py) with a real JupyterHub database: users, groups, tokens, roles
and running-server records, made with JupyterHub's ORM.

The round trip compares every table of the restored database with the original;
each refusal (newer release, truncated or flipped archive, a base with users) leaves
the base byte-identical; links planted in state/ by the hub's (unprivileged) user are
never followed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

import helpers
from conftest import fake_prefix
from helpers import version
from test_install import barehub, install, snapshot

HUB_USER = "barehub-t-bkhub"


def make_db(base: Path) -> None:
    """A real JupyterHub database: users in a group, a role, an API token, a running server."""
    from jupyterhub import orm

    db = orm.new_session_factory(f"sqlite:///{base / 'state' / 'jupyterhub.sqlite'}")()
    alice, bob = orm.User(name="alice", admin=True), orm.User(name="bob")
    group = orm.Group(name="physics")
    role = orm.Role(name="physics-readers", scopes=["read:users", "list:users"])
    db.add_all([alice, bob, group, role, orm.OAuthClient(identifier="jupyterhub")])
    db.commit()
    group.users.append(bob)
    role.users.append(bob)
    role.groups.append(group)
    bob.new_api_token(token="bob-token-0123456789abcdef", note="backup test", scopes=["read:users"])
    server = orm.Server(ip="127.0.0.1", port=47011, base_url="/user/bob/")
    db.add(server)
    db.commit()
    spawner = orm.Spawner(user_id=bob.id, name="", server_id=server.id, state={"pid": 424242})
    db.add(spawner)
    db.commit()
    db.close()


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, sorted."""
    with sqlite3.connect(db) as c:
        tables = [r[0] for r in c.execute("select name from sqlite_master where type='table' order by name")]
        return {t: sorted(map(repr, c.execute(f'select * from "{t}"'))) for t in tables}


def installed(base: Path, toml: str = "") -> Path:
    if not (base / "envs" / version()).exists():
        fake_prefix(base)
    if toml:
        base.mkdir(parents=True, exist_ok=True)
        (base / "barehub.toml").write_text(toml)
    r = install(base, "--no-start")
    assert r.returncode == 0, r.stdout + r.stderr
    return base


@pytest.fixture
def full(base):
    """An installed base with a hub database, a config.d file and ACME storage."""
    installed(base, '[proxy]\nhttp_port = 8017\n')
    (base / "jupyterhub_config.d" / "10-auth.py").write_text('c.Authenticator.allowed_users = {"alice"}\n')
    make_db(base)
    acme = base / "state" / "proxy" / "acme" / "acme.json"
    acme.write_text('{"letsencrypt": {"Account": {"Email": "a@example.org"}}}\n')
    acme.chmod(0o600)
    rules = base / "state" / "proxy" / "rules" / "jupyterhub.toml"
    rules.write_text("# the hub's rules file: its API router (with the API password's hash) and routes\n")
    rules.chmod(0o640)
    return base


def backup(base: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return barehub("backup", "--base", str(base), "-o", str(out), *extra)


def restore(base: Path, archive: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return barehub("restore", "--base", str(base), str(archive), "--no-start", *extra)


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {ti.name: tar.extractfile(ti).read() for ti in tar}


def rewrite(archive: Path, dst: Path, change) -> None:
    """A copy of the archive with change(name, data) -> data applied to each member."""
    buf = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=buf, mode="w:gz") as out:
        for ti in src:
            data = change(ti.name, src.extractfile(ti).read())
            ti.size = len(data)
            out.addfile(ti, io.BytesIO(data))
    dst.write_bytes(buf.getvalue())


def test_backup_then_restore_into_a_fresh_base_gives_back_everything(full, tmp_path):
    out = tmp_path / "b.tar.gz"
    r = backup(full, out)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    got = members(out)
    names = list(got)
    assert names[0] == "barehub-backup/manifest.json"
    manifest = json.loads(got["barehub-backup/manifest.json"])
    assert manifest["barehub_version"] == version()
    for name, meta in manifest["members"].items():
        assert hashlib.sha256(got[f"barehub-backup/{name}"]).hexdigest() == meta["sha256"], name
    assert {"barehub.toml", "jupyterhub_config.d/10-auth.py", "state/jupyterhub.sqlite",
            "state/jupyterhub_cookie_secret", "state/proxy_api_password", "state/proxy/acme/acme.json",
            "state/proxy/rules/jupyterhub.toml", "environment.lock"} <= set(manifest["members"])
    assert manifest["lockfile"]["kind"] == "pip-freeze"  # the fake env has no conda-meta/
    assert "# Recreate with: python -m pip install -r THIS_FILE" in got["barehub-backup/environment.lock"].decode()

    fresh = installed(tmp_path / "fresh")
    before_secret = (fresh / "state" / "jupyterhub_cookie_secret").read_bytes()
    r = restore(fresh, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dump(fresh / "state" / "jupyterhub.sqlite") == dump(full / "state" / "jupyterhub.sqlite")
    users = dump(fresh / "state" / "jupyterhub.sqlite")
    assert any("alice" in row for row in users["users"]) and users["api_tokens"] and users["spawners"]
    for rel in ("barehub.toml", "jupyterhub_config.d/10-auth.py", "state/jupyterhub_cookie_secret",
                "state/proxy_api_password", "state/proxy/acme/acme.json", "state/proxy/rules/jupyterhub.toml"):
        assert (fresh / rel).read_bytes() == (full / rel).read_bytes(), rel
    assert stat.S_IMODE((fresh / "state/proxy/rules/jupyterhub.toml").stat().st_mode) == 0o640
    for rel in ("state/jupyterhub_cookie_secret", "state/proxy_api_password", "state/jupyterhub.sqlite",
                "state/proxy/acme/acme.json"):
        assert stat.S_IMODE((fresh / rel).stat().st_mode) == 0o600, rel
    # what it replaced is kept, root only; the restored barehub.toml was applied (re-rendered)
    kept = list(fresh.glob("restore-kept-*"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o700
    assert (kept[0] / "state" / "jupyterhub_cookie_secret").read_bytes() == before_secret
    assert "8017" in (fresh / "generated" / "traefik.toml").read_text()


def test_backup_keeps_the_newest_n(full, tmp_path):
    d = tmp_path / "nightly"
    d.mkdir()
    for i in range(4):
        r = backup(full, d, "--keep", "2")
        assert r.returncode == 0, r.stderr
        os.utime(max(d.iterdir(), key=lambda p: p.stat().st_mtime_ns), (1000 + i, 1000 + i))
    left = sorted(d.iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(left) == 2 and [p.stat().st_mtime for p in left] == [1002, 1003]
    assert barehub("backup", "--base", str(full), "--keep", "2").returncode == 1


@pytest.fixture
def archive(full, tmp_path):
    out = tmp_path / "good.tar.gz"
    assert backup(full, out).returncode == 0
    return out


def _refused(base: Path, archive: Path, expect: str, *extra: str) -> str:
    before = snapshot(base)
    r = restore(base, archive, *extra)
    assert r.returncode == 1, r.stdout + r.stderr
    assert expect in r.stderr, r.stderr
    assert "Nothing was changed" in r.stderr
    assert snapshot(base) == before, "a refused restore changed the base"
    return r.stderr


def test_restore_refuses_a_newer_release(archive, tmp_path):
    newer = tmp_path / "newer.tar.gz"

    def bump(name, data):
        if name.endswith("manifest.json"):
            m = json.loads(data)
            m["barehub_version"] = "2099.1.0"
            return json.dumps(m).encode()
        return data

    rewrite(archive, newer, bump)
    _refused(installed(tmp_path / "fresh"), newer, "written by barehub 2099.1.0, newer than this")


def test_restore_refuses_truncated_and_flipped_archives(archive, tmp_path):
    fresh = installed(tmp_path / "fresh")
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    _refused(fresh, truncated, "is damaged or truncated")
    flipped = tmp_path / "flipped.tar.gz"
    i = len(data) // 2
    flipped.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
    _refused(fresh, flipped, "is damaged or truncated")
    # a member changed after the backup, with a valid gzip stream: only the manifest can tell
    tampered = tmp_path / "tampered.tar.gz"
    rewrite(archive, tampered, lambda n, d: d.replace(b"alice", b"mallo") if n.endswith(".sqlite") else d)
    _refused(fresh, tampered, "state/jupyterhub.sqlite does not match its sha256")
    # a gzip of something else entirely
    other = tmp_path / "other.tar.gz"
    other.write_bytes(gzip.compress(b"not a tar file" * 100))
    _refused(fresh, other, "is damaged or truncated")


def test_restore_refuses_a_base_with_users_unless_forced(full, archive, tmp_path):
    _refused(full, archive, "already has 2 user(s)")
    old_db = (full / "state" / "jupyterhub.sqlite").read_bytes()
    r = restore(full, archive, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    kept = next(full.glob("restore-kept-*"))
    assert (kept / "state" / "jupyterhub.sqlite").read_bytes() == old_db
    assert (kept / "jupyterhub_config.d" / "10-auth.py").exists()


@pytest.fixture
def hub_user():
    with helpers.local_user(HUB_USER) as name:
        yield name


def as_user(user: str, *cmd: str) -> None:
    subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd], check=True)


def test_links_the_hub_user_plants_in_state_are_never_followed(scratch, hub_user):
    """hub.user owns state/: as that (unprivileged) user, plant links to root-only files."""
    tmp_path = Path(tempfile.mkdtemp(dir=scratch, prefix="backup-links-"))
    tmp_path.chmod(0o755)  # the hub's user reaches state/ (pytest's tmp dirs are mode 700)
    base = tmp_path / "barehub"
    installed(base, f'[hub]\nuser = "{hub_user}"\n')
    state = base / "state"
    assert state.stat().st_uid != 0
    make_db(base)
    os.chown(state / "jupyterhub.sqlite", state.stat().st_uid, -1)
    victim = tmp_path / "root-only.sqlite"  # a database only root may read
    with sqlite3.connect(victim) as c:
        c.execute("create table secret(x)")
        c.execute("insert into secret values ('root-only-data')")
    victim.chmod(0o600)
    # backup: the database replaced by a link to the root-only one
    as_user(hub_user, "mv", str(state / "jupyterhub.sqlite"), str(state / "real.sqlite"))
    as_user(hub_user, "ln", "-s", str(victim), str(state / "jupyterhub.sqlite"))
    out = tmp_path / "b.tar.gz"
    r = backup(base, out)
    assert r.returncode == 1 and "symlink" in r.stderr, r.stdout + r.stderr
    assert not out.exists()
    # a secret replaced by a link: refused as well
    as_user(hub_user, "rm", str(state / "jupyterhub.sqlite"))
    as_user(hub_user, "mv", str(state / "real.sqlite"), str(state / "jupyterhub.sqlite"))
    as_user(hub_user, "mv", str(state / "proxy_api_password"), str(state / "pw"))
    as_user(hub_user, "ln", "-s", str(victim), str(state / "proxy_api_password"))
    r = backup(base, out)
    assert r.returncode == 1 and "proxy_api_password is a symlink" in r.stderr, r.stdout + r.stderr
    as_user(hub_user, "rm", str(state / "proxy_api_password"))
    as_user(hub_user, "mv", str(state / "pw"), str(state / "proxy_api_password"))
    assert backup(base, out).returncode == 0
    # restore: links where restore writes must be replaced, not written through
    victim_bytes = victim.read_bytes()
    as_user(hub_user, "rm", str(state / "jupyterhub_cookie_secret"))
    as_user(hub_user, "ln", "-s", str(victim), str(state / "jupyterhub_cookie_secret"))
    as_user(hub_user, "ln", "-s", str(victim), str(state / ".jupyterhub.sqlite.restore"))
    r = restore(base, out, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert victim.read_bytes() == victim_bytes
    secret = state / "jupyterhub_cookie_secret"
    assert not secret.is_symlink() and secret.stat().st_uid == state.stat().st_uid
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert dump(state / "jupyterhub.sqlite")["users"]
