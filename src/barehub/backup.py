"""`barehub backup` and `barehub restore`: one archive with everything a base cannot re-create.

The archive is a tar.gz whose members all live under ``barehub-backup/``:

- ``manifest.json`` (first): the format, the barehub release that wrote it, when, and
  the sha256, size and mode of every other member;
- ``barehub.toml`` and ``jupyterhub_config.d/`` (the admin's files);
- ``state/jupyterhub.sqlite``: a consistent copy made with sqlite's online backup API
  (the hub may keep running), ``state/jupyterhub_cookie_secret``,
  ``state/proxy_api_password``, ``state/proxy/acme/acme.json`` (the ACME account and
  certificates) and ``state/proxy/rules/jupyterhub.toml`` (the hub's routes, and the hash
  of the API password traefik checks), whichever exist;
- ``environment.lock``: the active environment's exact package list, as `barehub env
  export` writes it (conda's @EXPLICIT list from conda-meta/, else name==version lines
  of its Python packages). It is for the record and for rebuilding the environment;
  restore does not apply it, it only says whether the active environment differs.

Both commands run as root, and state/ is writable by the hub's user: nothing below
state/ is opened through a symlink (every path component is opened with O_NOFOLLOW,
relative to its parent's descriptor), and the database is read by a child process
running as the owner of state/ when that is not root. Restore verifies the whole
archive (every checksum) before it changes anything, and moves everything it replaces
into ``restore-kept-<UTC time>/`` in the base (root only, mode 700).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import socket
import sqlite3
import stat
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import barehub
from barehub import envs, render, settings, systemd
from barehub.layout import HUB_UNIT, PROXY_UNIT, Layout

FORMAT = 1
PREFIX = "barehub-backup"
MANIFEST = "manifest.json"
LOCKFILE = "environment.lock"
DB = "state/jupyterhub.sqlite"
RULES = "state/proxy/rules/jupyterhub.toml"
#: secrets, the ACME storage and the hub's rules file, below state/ (hub- and proxy-user-writable).
#: The rules file holds the hash of the proxy's API password and the routes of the servers in
#: the database: without it, a restored password would not match the one traefik checks.
STATE_FILES = ("state/jupyterhub_cookie_secret", "state/proxy_api_password", "state/proxy/acme/acme.json", RULES)
NAME_PREFIX = "barehub-backup-"
NAME_SUFFIX = ".tar.gz"


class BackupError(Exception):
    pass


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# ------------------------------------------------------------------ reading below state/, no symlinks


def _open_dir(base: Path, parts: list[str], create: bool = False) -> int:
    """A descriptor of base/parts..., each component opened with O_NOFOLLOW from its parent."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if isinstance(e, FileNotFoundError):
                    raise
                raise BackupError(f"{base / '/'.join(parts)}: {part} is a symlink or not a directory "
                                  f"({e.strerror}); barehub never follows links below state/. "
                                  "Move it away, then run the command again.") from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_nofollow(base: Path, rel: str) -> tuple[bytes, int] | None:
    """(content, mode) of the regular file base/rel, opened without following any link; None if missing."""
    *dirs, name = rel.split("/")
    try:
        dfd = _open_dir(base, dirs)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BackupError(f"{base / rel} is a symlink or cannot be opened ({e.strerror}); barehub never "
                          "follows links below state/. Move it away, then run the command again.") from None
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BackupError(f"{base / rel} is not a regular file; move it away, then run the command again.")
        return f.read(), stat.S_IMODE(st.st_mode)


def db_copy(layout: Layout) -> bytes | None:
    """The hub's database, copied with sqlite's backup API (consistent while the hub writes).

    As root, with state/ owned by another user (the hub's), the copy is made by a child
    running as that user, so a link planted in state/ reads nothing the hub could not.
    """
    try:
        st = os.lstat(layout.state)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise BackupError(f"{layout.state} is not a directory (a symlink?); barehub never follows it.")
    if os.geteuid() != 0 or st.st_uid == 0:
        try:
            os.lstat(layout.db_file)
        except FileNotFoundError:
            return None
        if layout.db_file.is_symlink():
            raise BackupError(f"{layout.db_file} is a symlink; barehub never follows links below state/.")
        return _copy_here(layout.db_file)
    return _copy_as(layout.db_file, st.st_uid)


def _copy_here(db: Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="barehub-backup-") as tmp:
        dst = Path(tmp) / "db.sqlite"
        try:
            render.sqlite_copy(db, dst)
        except sqlite3.Error as e:
            raise BackupError(f"cannot copy the database {db}: {e}") from None
        return dst.read_bytes()


def _copy_as(db: Path, uid: int) -> bytes | None:
    """_copy_here in a child running as uid (its groups), the bytes back through a pipe."""
    try:
        pw = pwd.getpwuid(uid)
        gid, name = pw.pw_gid, pw.pw_name
    except KeyError:
        gid, name = uid, None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the owner of state/, copy, write the bytes, exit
        code = 0
        try:
            os.close(r)
            if name:
                os.initgroups(name, gid)
            else:
                os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.environ["TMPDIR"] = "/tmp"
            tempfile.tempdir = None
            out = b"\0"  # no database
            if os.path.lexists(db):
                if os.path.islink(db):
                    raise BackupError(f"{db} is a symlink; barehub never follows links below state/.")
                out = b"\1" + _copy_here(db)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out, code = b"\2" + str(e).encode(), 1
        try:
            with os.fdopen(w, "wb") as f:
                f.write(out)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data or data[:1] == b"\2":
        raise BackupError(f"cannot copy the database {db} as {name or uid}: {data[1:].decode(errors='replace')}")
    return None if data[:1] == b"\0" else data[1:]


# ------------------------------------------------------------------ what goes in


def _config_d_files(layout: Layout) -> dict[str, tuple[bytes, int]]:
    out: dict[str, tuple[bytes, int]] = {}
    if not layout.config_d.is_dir():
        return out
    for p in sorted(layout.config_d.rglob("*")):
        if "__pycache__" in p.parts or not p.is_file():
            continue
        out[str(p.relative_to(layout.base))] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def lockfile(layout: Layout) -> tuple[str, str] | None:
    """(kind, text) of the active environment's package list; None without an active env."""
    from barehub import upgrade

    env = envs.active_env(layout)
    if env is None:
        return None
    kind = "conda-explicit" if (env / "conda-meta").is_dir() else "pip-freeze"
    return kind, upgrade.export(env, layout)


def collect(layout: Layout) -> tuple[dict[str, tuple[bytes, int]], dict]:
    """{member name relative to the base: (content, mode)} and the manifest's other fields."""
    members: dict[str, tuple[bytes, int]] = {}
    if not layout.settings_file.is_file():
        raise BackupError(f"{layout.base} is not a barehub base (no barehub.toml). Pass --base.")
    members["barehub.toml"] = (layout.settings_file.read_bytes(), stat.S_IMODE(layout.settings_file.stat().st_mode))
    members.update(_config_d_files(layout))
    for rel in STATE_FILES:
        got = read_nofollow(layout.base, rel)
        if got is not None:
            members[rel] = got
    db = db_copy(layout)
    if db is not None:
        members[DB] = (db, 0o600)
    info: dict = {"database": db is not None}
    lock = lockfile(layout)
    if lock is not None:
        members[LOCKFILE] = (lock[1].encode(), 0o644)
        info["lockfile"] = {"member": LOCKFILE, "kind": lock[0], "env": str(envs.active_env(layout))}
    return members, info


def _tarinfo(name: str, size: int, mode: int, mtime: float) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(f"{PREFIX}/{name}")
    ti.size, ti.mode, ti.mtime = size, mode, int(mtime)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def archive_bytes(members: dict[str, tuple[bytes, int]], info: dict, base: Path) -> bytes:
    now = time.time()
    manifest = {
        "format": FORMAT,
        "barehub_version": barehub.__version__,
        "created": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.getfqdn(),
        "base": str(base),
        **info,
        "members": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "mode": f"{mode:o}"}
                    for name, (data, mode) in sorted(members.items())},
    }
    text = (json.dumps(manifest, indent=1) + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(_tarinfo(MANIFEST, len(text), 0o600, now), io.BytesIO(text))
        for name, (data, mode) in sorted(members.items()):
            tar.addfile(_tarinfo(name, len(data), mode, now), io.BytesIO(data))
    return buf.getvalue()


def write_private(path: Path, data: bytes) -> None:
    """Write path atomically, mode 600 from the first byte; never through a link at path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link at path itself, never its target
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def backup(layout: Layout, output: Path | None, keep: int | None = None,
           say: Callable[[str], None] = print) -> Path:
    """Write the archive to output (a file, or a directory for a dated name); return its path."""
    if keep is not None and (keep < 1 or output is None or not output.is_dir()):
        raise BackupError("--keep N needs N >= 1 and -o DIRECTORY (it removes all but the N newest "
                          "barehub-backup-* archives there)")
    members, info = collect(layout)
    data = archive_bytes(members, info, layout.base)
    stem = f"{NAME_PREFIX}{barehub.__version__}-{_stamp()}"
    folder = Path(".") if output is None else output
    if output is None or output.is_dir():
        target, n = folder / f"{stem}{NAME_SUFFIX}", 1
        while target.exists() or target.is_symlink():  # two backups in one second
            n += 1
            target = folder / f"{stem}-{n}{NAME_SUFFIX}"
    else:
        target = output
    if not target.parent.is_dir():
        raise BackupError(f"cannot write {target}: {target.parent} is not a directory.")
    write_private(target, data)
    say(f"wrote {target} ({len(data)} bytes, mode 600): {len(members)} files"
        + ("" if info["database"] else f"; no database at {layout.db_file}"))
    if keep is not None and output is not None:
        old = sorted((p for p in output.iterdir() if p.name.startswith(NAME_PREFIX) and p.name.endswith(NAME_SUFFIX)
                      and p.is_file() and not p.is_symlink()), key=lambda p: (p.stat().st_mtime, p.name))
        for p in old[:max(0, len(old) - keep)]:
            p.unlink()
            say(f"removed {p} (--keep {keep})")
    return target


# ------------------------------------------------------------------ reading an archive back


@dataclass
class Archive:
    manifest: dict
    members: dict[str, tuple[bytes, int]]

    @property
    def version(self) -> str:
        return str(self.manifest.get("barehub_version", ""))


def read_archive(path: Path) -> Archive:
    """Every member, checked against the manifest; BackupError on anything damaged, missing or extra."""
    bad = (f"{path} is damaged or truncated: {{}}. Nothing was changed. Use another backup "
           "(`sha256sum` against the one you stored, or an older archive).")
    raw: dict[str, tuple[bytes, int]] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for ti in tar:
                name = ti.name
                if not ti.isfile() or not name.startswith(PREFIX + "/") or ".." in name.split("/"):
                    raise BackupError(bad.format(f"unexpected member {name!r}"))
                f = tar.extractfile(ti)
                assert f is not None
                raw[name[len(PREFIX) + 1:]] = (f.read(), stat.S_IMODE(ti.mode))
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file. Nothing was changed.") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BackupError(bad.format(f"{type(e).__name__}: {e}")) from None
    if MANIFEST not in raw:
        raise BackupError(bad.format(f"no {PREFIX}/{MANIFEST}"))
    try:
        manifest = json.loads(raw.pop(MANIFEST)[0])
        listed = manifest["members"]
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(bad.format(f"unreadable manifest ({e})")) from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path} has archive format {manifest.get('format')!r}; this barehub "
                          f"{barehub.__version__} reads format {FORMAT}. Nothing was changed.")
    missing, extra = sorted(set(listed) - set(raw)), sorted(set(raw) - set(listed))
    if missing or extra:
        raise BackupError(bad.format(f"members missing {missing} or not in the manifest {extra}"))
    for name, (data, _mode) in raw.items():
        want = listed[name]
        if hashlib.sha256(data).hexdigest() != want.get("sha256") or len(data) != want.get("size"):
            raise BackupError(bad.format(f"{name} does not match its sha256 in the manifest"))
    return Archive(manifest, raw)


def _users_in(db: bytes | None) -> int:
    if not db:
        return 0
    with tempfile.TemporaryDirectory(prefix="barehub-restore-") as tmp:
        p = Path(tmp) / "db.sqlite"
        p.write_bytes(db)
        c = sqlite3.connect(p)
        try:
            return c.execute("select count(*) from users").fetchone()[0]
        except sqlite3.Error:
            return 0
        finally:
            c.close()


# ------------------------------------------------------------------ putting it back


class _Mover:
    """Replaces files of the base, each first moved into the kept directory (never through a link)."""

    def __init__(self, layout: Layout, kept: Path):
        self.layout, self.kept = layout, kept
        self.kept.mkdir(mode=0o700)
        os.chmod(self.kept, 0o700)
        self.kfd = os.open(self.kept, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self.moved: list[str] = []

    def close(self) -> None:
        os.close(self.kfd)

    def _keep(self, dfd: int, name: str, rel: str) -> None:
        try:
            os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return
        kdir = self.kfd
        parts = rel.split("/")[:-1]
        for part in parts:
            try:
                os.mkdir(part, 0o700, dir_fd=kdir)
            except FileExistsError:
                pass
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=kdir)
            if kdir != self.kfd:
                os.close(kdir)
            kdir = nfd
        try:
            os.rename(name, name, src_dir_fd=dfd, dst_dir_fd=kdir)
        finally:
            if kdir != self.kfd:
                os.close(kdir)
        self.moved.append(rel)

    def put(self, rel: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
        *dirs, name = rel.split("/")
        dfd = _open_dir(self.layout.base, dirs, create=True)
        try:
            self._keep(dfd, name, rel)
            tmp = f".{name}.restore"
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                if owner and os.geteuid() == 0:
                    os.fchown(f.fileno(), *owner)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def keep_only(self, rel: str) -> None:
        """Move base/rel into the kept directory (the db's -journal, -wal, -shm leftovers)."""
        *dirs, name = rel.split("/")
        try:
            dfd = _open_dir(self.layout.base, dirs)
        except FileNotFoundError:
            return
        try:
            self._keep(dfd, name, rel)
        finally:
            os.close(dfd)


def _uid_gid(user: str) -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def restore(layout: Layout, path: Path, *, force: bool = False, no_start: bool = False,
            say: Callable[[str], None] = print) -> int:
    """Put an archive back into an installed base; see docs/backup.md."""
    from barehub import install, upgrade

    arch = read_archive(path)  # every checksum, before anything else
    here, theirs = envs.parse_version(barehub.__version__), envs.parse_version(arch.version)
    if theirs is None or (here is not None and theirs > here):
        raise BackupError(f"{path} was written by barehub {arch.version or '(unknown)'}, newer than this "
                          f"barehub {barehub.__version__}: its database may have a schema this release does "
                          f"not know. Install barehub {arch.version} (or newer) first, then restore. "
                          "Nothing was changed.")
    if not layout.settings_file.is_file():
        raise BackupError(f"{layout.base} is not an installed barehub base (no barehub.toml). Install barehub "
                          f"{arch.version} there first (its installer), then restore. Nothing was changed.")
    env = envs.active_env(layout)
    if env is None:
        raise BackupError(f"{layout.hub_link} names no environment: install barehub first, then restore. "
                          "Nothing was changed.")
    users = _users_in(db_copy(layout))
    if users and not force:
        raise BackupError(f"{layout.db_file} already has {users} user(s): restoring would replace them. "
                          f"Back it up first (`barehub backup --base {layout.base}`), then run "
                          f"`barehub restore --force {path}`, which also keeps what it replaces. "
                          "Nothing was changed.")
    restored = settings.parse(arch.members["barehub.toml"][0].decode(), f"{path}: barehub.toml")

    managed = not no_start and systemd.is_running()
    say(f"barehub restore: {path} (barehub {arch.version}, {arch.manifest.get('created')}, from "
        f"{arch.manifest.get('host')}:{arch.manifest.get('base')}) into {layout.base}")
    if managed and systemd.unit_state(HUB_UNIT)[1] in ("active", "activating", "reloading"):
        say(f"stopping {HUB_UNIT} (users' servers keep running)")
        systemd.systemctl("stop", HUB_UNIT)
    if managed and "state/proxy/acme/acme.json" in arch.members:
        say(f"stopping {PROXY_UNIT} while its ACME storage is replaced (started again below)")
        systemd.systemctl("stop", PROXY_UNIT)
    kept, n = layout.base / f"restore-kept-{_stamp()}", 1
    while os.path.lexists(kept):  # two restores in one second
        n += 1
        kept = layout.base / f"restore-kept-{_stamp()}-{n}"
    mover = _Mover(layout, kept)
    try:
        hub_owner = _uid_gid(restored["hub.user"])
        proxy_owner = _uid_gid(restored["proxy.user"])
        for rel, (data, mode) in sorted(arch.members.items()):
            if rel == LOCKFILE:
                continue
            if rel.startswith("jupyterhub_config.d/"):
                continue
            if rel == DB:
                for suffix in ("-journal", "-wal", "-shm"):
                    mover.keep_only(DB + suffix)
            if rel.startswith("state/proxy/acme/"):
                owner = proxy_owner
            elif rel == RULES:  # the hub writes it, traefik (its group) reads it
                owner = (hub_owner[0], proxy_owner[1]) if hub_owner and proxy_owner else hub_owner
            else:
                owner = hub_owner if rel.startswith("state/") else None
            mover.put(rel, data, mode, owner)
        # jupyterhub_config.d/ as a whole: the old one moves into the kept directory
        confd = {rel: dm for rel, dm in arch.members.items() if rel.startswith("jupyterhub_config.d/")}
        stage = layout.base / f".jupyterhub_config.d.restore-{_stamp()}"
        stage.mkdir(mode=0o755)
        for rel, (data, mode) in confd.items():
            dst = stage / rel.split("/", 1)[1]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            os.chmod(dst, mode)
        if layout.config_d.exists() or layout.config_d.is_symlink():
            os.rename(layout.config_d, kept / layout.config_d.name)
            mover.moved.append(layout.config_d.name + "/")
        os.rename(stage, layout.config_d)
    finally:
        mover.close()
    say(f"restored {len(arch.members) - (LOCKFILE in arch.members)} files; what they replaced is in {kept} "
        f"({len(mover.moved)} entries, root only)")
    if LOCKFILE in arch.members:
        ours = [line for line in upgrade.export(env, layout).splitlines() if not line.startswith("#")]
        theirs_lock = [line for line in arch.members[LOCKFILE][0].decode().splitlines() if not line.startswith("#")]
        if ours != theirs_lock:
            diff = len(set(ours) ^ set(theirs_lock))
            say(f"note: the active environment {env} differs from the backed-up one ({diff} lines of the package "
                f"list differ); the archive's list is {PREFIX}/{LOCKFILE} (`tar -xzf {path} {PREFIX}/{LOCKFILE}`)")
    if here != theirs and DB in arch.members:
        say(f"the database comes from barehub {arch.version}: jupyterhub upgrade-db")
        upgrade.upgrade_db(layout, env, say)
    sys.stdout.flush()
    try:
        rc = install.install(layout.base, env, no_start=no_start or not managed, say=say)
    except install.InstallError as e:
        raise BackupError(f"{e}\nThe files are restored (what they replaced is in {kept}), but the hub was not "
                          f"started. Fix the problem, then run `barehub install --base {layout.base}`.") from None
    say(f"restored {path} into {layout.base}")
    return rc
