"""Files root touches where a non-root user could have planted something.

``state/`` belongs to the hub's user (``hub.user``), and everything that user
can write is hostile to root-run commands (install, upgrade, rollback,
render-proxy). Below a base, these primitives never follow a symbolic link:
directories are walked one component at a time from the base with
``O_DIRECTORY | O_NOFOLLOW``, files are opened with ``O_NOFOLLOW`` (and
``O_NONBLOCK``, so a planted FIFO cannot hang root), created with ``O_EXCL``,
and modes and owners are set on the open descriptor (fchmod, fchown) before
the file is renamed into place.

:func:`check_trusted` is the other half: the base itself, and what root
executes from it (``jupyterhub_config.d/``), must be changeable by root only
(see docs/security.md, "Files root trusts").
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import stat
from pathlib import Path
from typing import Iterator

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path root will not use: a link where none belongs, or one another user controls."""

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(message)
        self.message = message
        self.filename = str(path) if path is not None else None

    def __str__(self) -> str:
        return self.message


def _is_root() -> bool:
    return os.geteuid() == 0


def _planted(path: Path, what: str) -> UnsafePath:
    return UnsafePath(
        f"{path} is {what}, where barehub expects a plain directory or file. Something (the hub's "
        f"user can write there) replaced it; root-run commands never follow links there. Look at it "
        f"(`ls -la {path.parent}`), remove it (`rm {path}`), then run the command again. Nothing "
        "was changed through it.", path)


def _open_dir_at(dfd: int, name: str, path: Path) -> int:
    try:
        return os.open(name, _DIR, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                raise e from None
            raise _planted(path, "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory") from None
        raise


@contextlib.contextmanager
def opendir(base: Path, path: Path, *, create: int | None = None) -> Iterator[int]:
    """A descriptor of directory `path` inside `base`, reached without following any link below `base`.

    With `create`, missing directories are made with that mode (explicitly, whatever the umask).
    """
    rel = Path(path).relative_to(base)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(rel.parts):
            if create is not None:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    made = True
                except OSError as e:  # exists, or a read-only mount (render-proxy's sandbox)
                    if e.errno not in (errno.EEXIST, errno.EROFS, errno.EACCES, errno.EPERM):
                        raise
                    made = False
            nfd = _open_dir_at(fd, part, Path(base).joinpath(*rel.parts[: i + 1]))
            if create is not None and made:
                os.fchmod(nfd, create)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _own(fd: int, uid: int, gid: int) -> None:
    if _is_root() and (uid != -1 or gid != -1):
        os.fchown(fd, uid, gid)


def ensure_dir(base: Path, path: Path, mode: int, uid: int = -1, gid: int = -1) -> None:
    """mkdir `path` (its parent must exist) unless it exists; then set its mode and owner (root only).

    The mode is set explicitly, whatever the umask; a link at `path` is refused, not followed.
    """
    path = Path(path)
    with opendir(base, path.parent) as pfd:
        try:
            os.mkdir(path.name, 0o700, dir_fd=pfd)
        except FileExistsError:
            pass
        fd = _open_dir_at(pfd, path.name, path)
        try:
            _own(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _read_at(dfd: int, name: str) -> tuple[bytes, os.stat_result] | None:
    """(content, stat) of a regular file in dfd; None when it is missing or not a regular file."""
    try:
        fd = os.open(name, _FILE, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_bytes(base: Path, path: Path) -> bytes:
    """The content of regular file `path`, never through a link (FileNotFoundError when missing)."""
    path = Path(path)
    with opendir(base, path.parent) as dfd:
        got = _read_at(dfd, path.name)
        if got is None:
            st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)  # FileNotFoundError when missing
            raise _planted(path, "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file")
        return got[0]


def lstat(base: Path, path: Path) -> os.stat_result | None:
    """lstat of `path` reached without links; None when missing."""
    path = Path(path)
    with opendir(base, path.parent) as dfd:
        try:
            return os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def write_atomic(base: Path, path: Path, data: str | bytes, mode: int = 0o644,
                 uid: int = -1, gid: int = -1, *, mkdirs: int | None = None) -> bool:
    """Replace `path` with `data` in one rename; True when content, mode or owner changed.

    The new file is created O_EXCL|O_NOFOLLOW in the directory's descriptor and
    gets its mode and owner before any byte is written; a link at `path` is
    replaced, never followed. With `mkdirs`, missing directories are made with that mode.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    with opendir(base, path.parent, create=mkdirs) as dfd:
        got = _read_at(dfd, path.name)
        if got is not None:
            content, st = got
            owner_ok = not _is_root() or ((uid == -1 or st.st_uid == uid) and (gid == -1 or st.st_gid == gid))
            if content == raw and stat.S_IMODE(st.st_mode) == mode and owner_ok:
                return False
        tmp = f".{path.name}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                _own(fd, uid, gid)
                os.fchmod(fd, mode)
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    return True


def unlink(base: Path, path: Path) -> bool:
    """Remove `path` (a link itself, never its target); False when it was missing."""
    path = Path(path)
    try:
        with opendir(base, path.parent) as dfd:
            os.unlink(path.name, dir_fd=dfd)
    except FileNotFoundError:  # the file, or its directory
        return False
    return True


def chmod_files(base: Path, directory: Path, names: list[str], mode: int) -> list[str]:
    """fchmod each regular file `names` in `directory`; links and other types are left alone."""
    done = []
    with opendir(base, directory) as dfd:
        for name in names:
            try:
                fd = os.open(name, _FILE, dir_fd=dfd)
            except OSError:
                continue  # missing, a link (ELOOP), unreadable: not ours to touch
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.fchmod(fd, mode)
                    done.append(name)
            finally:
                os.close(fd)
    return done


def listdir(base: Path, directory: Path) -> list[str]:
    with opendir(base, directory) as dfd:
        return os.listdir(dfd)


# ------------------------------------------------------------------ what root trusts


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _refuse(path: Path, st: os.stat_result, what: str, why: str) -> UnsafePath:
    mode = stat.filemode(st.st_mode)
    return UnsafePath(
        f"{path} ({what}) is owned by {_owner(st.st_uid)}, mode {mode}: {why}, so a root-run "
        f"barehub command would trust what another user can change. Fix: `chown root:root {path}` "
        f"and `chmod go-w {path}` (or choose a path only root can change). Nothing was changed.", path)


def check_trusted(path: Path, what: str, *, link_ok: bool = False) -> None:
    """Refuse `path` unless only root can change it or any directory above it.

    Every directory from / down must be owned by root and not writable by its
    group or others; a root-owned sticky directory (like /tmp, 1777) is accepted
    above the path, since the next component must be root's too and a sticky
    directory keeps others from renaming it. `path` itself must be root's and not
    group- or world-writable, sticky or not, and (unless `link_ok`) not a link.
    Links above it are followed, and where they lead is checked the same way. A
    missing `path` (a first install) is fine: what exists above it is checked.
    """
    path = Path(path).absolute()
    todo = list(path.parts[1:])
    cur = Path("/")
    st = os.lstat(cur)
    _check_component(cur, st, what, final=not todo)
    links = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            cur = cur.parent
            continue
        nxt = cur / part
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            if not todo and not link_ok:
                raise UnsafePath(f"{nxt} ({what}) is a symbolic link (to {os.readlink(nxt)}); root-run barehub "
                                 f"commands use the real directory only. Pass it instead: "
                                 f"{os.path.realpath(nxt)}. Nothing was changed.", nxt)
            links += 1
            if links > 40:
                raise UnsafePath(f"{path}: too many levels of symbolic links", path)
            target = Path(os.readlink(nxt))  # the link's directory (cur) is checked already
            todo = list(target.parts[1:] if target.is_absolute() else target.parts) + todo
            if target.is_absolute():
                cur = Path("/")
            continue
        _check_component(nxt, st, what, final=not todo)
        cur = nxt


def _check_component(p: Path, st: os.stat_result, what: str, *, final: bool) -> None:
    label = what if final else f"above {what}"
    if st.st_uid != 0:
        raise _refuse(p, st, label, "only root may own it")
    if st.st_mode & 0o022:
        if final or not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
            raise _refuse(p, st, label, "others than root may write to it")
