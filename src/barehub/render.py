"""Rendering the jinja2 templates shipped in barehub/templates, and writing files safely."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import tempfile
from importlib.resources import files
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    """Templates ship inside the package; a source checkout keeps them at the top."""
    packaged = Path(str(files("barehub"))) / "templates"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"barehub templates not found in {packaged} or {checkout}")


def toml_string(value: object) -> str:
    """A TOML basic string, quotes included, that reads back as exactly str(value).

    JSON's string escapes (quote, backslash, newline and the other control
    characters) are all valid in TOML. Non-ASCII text stays as it is (JSON's
    surrogate-pair escapes are not valid TOML), and DEL, which JSON leaves
    alone but TOML forbids in a string, is escaped too.
    """
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_comment(value: object) -> str:
    """Text for a TOML comment: one line, control characters escaped as in a string."""
    return toml_string(value)[1:-1]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    # every string a TOML template interpolates goes through this: {{ value | toml }}
    env.filters["toml"] = toml_string
    # and every value in a TOML comment through this: {{ value | comment }}
    env.filters["comment"] = toml_comment
    return env


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)


def write_atomic(path: Path, text: str | bytes, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``text`` (or bytes) in one rename; return True when the content changed.

    The temporary file gets its final mode before any byte is written, so a
    secret is never readable by others, even for an instant.
    """
    try:
        current = path.read_bytes() if isinstance(text, bytes) else path.read_text()
        if current == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def ensure_secret(path: Path, nbytes: int = 32) -> bool:
    """Create a random hex secret (mode 600) unless one exists; never overwrite."""
    if path.exists():
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty. Delete it and run `barehub install` again to make a new one.")
        return False
    write_atomic(path, secrets.token_hex(nbytes) + "\n", mode=0o600)
    return True


def sqlite_copy(src: Path, dst: Path, *, read_only: bool = True) -> None:
    """A consistent copy of a sqlite database through sqlite's backup API, opening src read-only.

    read_only=False: src is opened read-write, so that a hot journal beside it is rolled
    back first (only for a private copy nobody else can reach).
    """
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True) if read_only else sqlite3.connect(src)
    try:
        d = sqlite3.connect(dst)
        try:
            s.backup(d)
        finally:
            d.close()
    finally:
        s.close()
