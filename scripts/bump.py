#!/usr/bin/env python3
"""Pins and the release version: check the pins on conda-forge, propose bumps, set the version.

    python scripts/bump.py check [--conda CONDA]
        every pin (construct.yaml, flavors/*.yaml, construct/build-tools.txt) exists on
        conda-forge for every platform barehub ships; exit 1 naming each one that does not
    python scripts/bump.py propose [--conda CONDA] [--pypi URL] [--markdown FILE] [--apply [--no-lock]]
        the newest version of each pin that exists on conda-forge for all three platforms
        and, for a package the tests install from PyPI, on PyPI too; --apply writes them
        into the pin files and refreshes the PyPI locks with `make lock`
    python scripts/bump.py set-version YYYY.MM.N        (`make version VERSION=...`)
        sets the release version everywhere it is spelled out
    python scripts/bump.py next-version [--date YYYY-MM-DD] [--tags FILE]
        the next release: YYYY.MM.0, or the next patch if this month has a release already

conda-forge is asked through conda itself (`conda search --json --subdir ...`, which
also returns noarch packages), so this works wherever conda and conda-forge are,
as in release CI; PyPI through its JSON API. Needs `packaging` (scripts/requirements.txt).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lockcheck  # noqa: E402

ROOT = lockcheck.ROOT
FLAVORS_DIR = ROOT / "flavors"
BUILD_TOOLS = ROOT / "construct" / "build-tools.txt"
README = ROOT / "README.md"
PLATFORMS = lockcheck.PLATFORMS
CHANNEL = "conda-forge"
PYPI_JSON = "https://pypi.org/pypi"
# Pins whose series is a decision, not a bump: only their newest patch is proposed.
SAME_SERIES = {"python": 2}
# Never proposed: barehub is this repository's own package.
OURS = {"barehub"}


class BumpError(Exception):
    pass


@dataclass
class Pin:
    name: str            # conda-forge name
    version: str
    file: Path           # where the pin is written
    pypi: str | None     # the PyPI twin the tests install, or None (conda-only)
    lock: Path | None    # the PyPI lock whose `# roots:` line holds the twin

    @property
    def where(self) -> str:
        return str(self.file.relative_to(ROOT))


# --- the pins ----------------------------------------------------------------------

_SPEC_LINE = r"^(?P<lead>\s*-\s*){name}(?P<op>\s*==\s*){version}(?P<tail>\s*(?:#.*)?)$"


def read_build_tools(path: Path = BUILD_TOOLS) -> dict[str, str]:
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found, loose = lockcheck.exact_pins([line])
        if loose:
            raise BumpError(f"{path}:{number}: {line!r} is not an exact pin (name ==version)")
        pins.update(found)
    return pins


def pins() -> list[Pin]:
    """Every exact conda-forge pin of the release, where it is written, and its PyPI twin."""
    out = []
    info = lockcheck.parse_construct(environ={"BAREHUB_CHANNEL": str(lockcheck.LOCAL_CHANNEL)})
    base, loose = lockcheck.exact_pins(info.get("specs", []))
    if loose:
        raise BumpError(f"construct/construct.yaml: specs that are not exact pins: {loose}")
    for name, version in base.items():
        if name in OURS:
            continue
        twin = None if name in lockcheck.NOT_IN_LOCK else lockcheck.CONDA_TO_PYPI.get(name, name)
        out.append(Pin(name, version, lockcheck.CONSTRUCT_YAML, twin, lockcheck.LOCK_FILE if twin else None))
    for path in sorted(FLAVORS_DIR.glob("*.yaml")):
        data = lockcheck.load_yaml(path.read_text()) or {}
        mapping = {k.lower(): v for k, v in (data.get("pypi") or {}).items()}
        found, loose = lockcheck.exact_pins(data.get("specs") or [])
        if loose:
            raise BumpError(f"{path.relative_to(ROOT)}: specs that are not exact pins: {loose}")
        for name, version in found.items():
            out.append(Pin(name, version, path, mapping.get(name, name), FLAVORS_DIR / f"{path.stem}.pypi.lock"))
    for name, version in read_build_tools().items():
        # constructor on PyPI is an unrelated project: the build tools are conda-only
        out.append(Pin(name, version, BUILD_TOOLS, None, None))
    return out


# --- where versions come from --------------------------------------------------------

class CondaForge:
    """Versions on conda-forge per platform, from `conda search` (platform + noarch)."""

    def __init__(self, conda: str):
        self.conda = conda
        self._cache: dict[tuple[str, str], set[str]] = {}

    def versions(self, name: str, platform: str) -> set[str]:
        key = (name, platform)
        if key not in self._cache:
            self._cache[key] = self._search(name, platform)
        return self._cache[key]

    def _search(self, name: str, platform: str) -> set[str]:
        cmd = [self.conda, "search", "--json", "--override-channels", "--channel", CHANNEL,
               "--subdir", platform, "--skip-flexible-search", name]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                               env=dict(os.environ, CONDA_NUMBER_CHANNEL_NOTICES="0"))
        except OSError as e:
            raise BumpError(f"cannot run {self.conda}: {e}") from e
        try:
            data = json.loads(r.stdout or "{}")
        except json.JSONDecodeError:
            raise BumpError(f"`{' '.join(cmd)}` printed no JSON (exit {r.returncode}):\n"
                            f"{(r.stdout + r.stderr).strip()[-2000:]}") from None
        if r.returncode != 0:
            if data.get("exception_name") in ("PackagesNotFoundError", "PackagesNotFoundInChannelsError"):
                return set()
            raise BumpError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): "
                            f"{data.get('message') or data.get('error') or r.stderr.strip()[-2000:]}")
        records = data.get(name, [])
        return {str(rec["version"]) for rec in records
                if rec.get("subdir") in (platform, "noarch") and rec.get("name", name) == name}


class PyPI:
    """Released (not yanked) versions of a project, from PyPI's JSON API."""

    def __init__(self, url: str = PYPI_JSON):
        self.url = url.rstrip("/")
        self._cache: dict[str, set[str]] = {}

    def versions(self, name: str) -> set[str]:
        if name not in self._cache:
            url = f"{self.url}/{name}/json"
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    data = json.load(r)
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    self._cache[name] = set()
                    return set()
                raise BumpError(f"{url}: HTTP {e.code}") from e
            except (urllib.error.URLError, OSError) as e:
                raise BumpError(f"{url}: {e}") from e
            self._cache[name] = {v for v, files in data.get("releases", {}).items()
                                 if files and not all(f.get("yanked") for f in files)}
        return self._cache[name]


# --- versions ----------------------------------------------------------------------------

def _parse(version: str):
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version)
    except InvalidVersion:
        return None


def stable(versions) -> dict:
    """{parsed: original} of the final releases among `versions` (no pre, dev or local)."""
    out = {}
    for v in versions:
        parsed = _parse(v)
        if parsed is not None and not parsed.is_prerelease and not parsed.is_devrelease and not parsed.local:
            out.setdefault(parsed, v)
    return out


def newest_common(pin: Pin, forge: CondaForge, pypi: PyPI | None) -> tuple[str | None, list[str]]:
    """The newest version that passes the rule for `pin`, and why newer ones do not."""
    per_platform = {p: stable(forge.versions(pin.name, p)) for p in PLATFORMS}
    on_pypi = stable(pypi.versions(pin.pypi)) if pin.pypi and pypi is not None else None
    current = _parse(pin.version)
    keep = SAME_SERIES.get(pin.name)

    def in_series(v) -> bool:
        return keep is None or current is None or v.release[:keep] == current.release[:keep]

    candidates = {v for v in set.intersection(*(set(vs) for vs in per_platform.values())) if in_series(v)}
    if on_pypi is not None:
        candidates &= set(on_pypi)
    best = max(candidates, default=None)
    notes = [f"not on conda-forge for {p} at all" for p, vs in per_platform.items() if not vs]
    seen = set().union(*(set(vs) for vs in per_platform.values()), set(on_pypi or ()))
    newer = [v for v in seen if in_series(v) and (best is None or v > best)]
    if newer:
        top = max(newer)
        lacking = [f"conda-forge {p}" for p in PLATFORMS if top not in per_platform[p]]
        if on_pypi is not None and top not in on_pypi:
            lacking.append(f"PyPI ({pin.pypi})")
        notes.append(f"{top} is not on {', '.join(lacking)}")
    if best is None:
        return None, notes
    return per_platform[PLATFORMS[0]][best], notes


# --- check --------------------------------------------------------------------------------

def check(forge: CondaForge, all_pins: list[Pin]) -> list[str]:
    problems = []
    for pin in all_pins:
        for platform in PLATFORMS:
            available = forge.versions(pin.name, platform)
            if pin.version in available:
                continue
            newest = max(stable(available), default=None)
            there = f"the newest there is {newest}" if newest is not None else "it has no version of it at all"
            problems.append(
                f"{pin.where}: {pin.name} =={pin.version} is not on conda-forge for {platform} ({there}). "
                f"The {platform} installer cannot be built: pin a version that is "
                f"(`python scripts/bump.py propose` lists them) or wait for the conda-forge feedstock.")
    return problems


# --- propose / apply ----------------------------------------------------------------------

@dataclass
class Proposal:
    pin: Pin
    new: str | None
    notes: list[str]

    @property
    def change(self) -> bool:
        if self.new is None or self.new == self.pin.version:
            return False
        old, new = _parse(self.pin.version), _parse(self.new)
        return old is None or (new is not None and new > old)

    @property
    def status(self) -> str:
        if self.new is None:
            return "no version passes the rule"
        if self.change:
            return f"{self.pin.version} -> {self.new}"
        if self.new == self.pin.version:
            return "newest already"
        return f"kept: the pinned {self.pin.version} fails the rule, the newest that passes is {self.new} (a downgrade)"


def propose(forge: CondaForge, pypi: PyPI | None, all_pins: list[Pin]) -> list[Proposal]:
    out = []
    for pin in all_pins:
        new, notes = newest_common(pin, forge, pypi)
        out.append(Proposal(pin, new, notes))
    return out


def table(proposals: list[Proposal]) -> str:
    rows = ["| package | file | pinned | proposed | notes |", "|---|---|---|---|---|"]
    for p in proposals:
        rows.append(f"| {p.pin.name} | {p.pin.where} | {p.pin.version} | {p.new if p.change else '-'} | "
                    f"{'; '.join([p.status] + p.notes)} |")
    return "\n".join(rows) + "\n"


def replace_spec(path: Path, name: str, old: str, new: str) -> None:
    text = path.read_text()
    pattern = re.compile(_SPEC_LINE.format(name=re.escape(name), version=re.escape(old)), re.M)
    if path == BUILD_TOOLS:
        pattern = re.compile(rf"^(?P<lead>){re.escape(name)}(?P<op>\s*==\s*){re.escape(old)}(?P<tail>\s*(?:#.*)?)$", re.M)
    text, n = pattern.subn(lambda m: f"{m['lead']}{name}{m['op']}{new}{m['tail']}", text)
    if n != 1:
        raise BumpError(f"{path}: expected one line pinning {name} =={old}, found {n}")
    path.write_text(text)


def replace_root(lock: Path, name: str, old: str, new: str) -> None:
    text = lock.read_text()
    roots = re.compile(r"^# roots:.*$", re.M)
    match = roots.search(text)
    if not match:
        raise BumpError(f"{lock}: no '# roots:' line")
    line = match[0]
    token = re.compile(rf"(?<=\s){re.escape(name)}=={re.escape(old)}(?=\s|$)", re.I)
    new_line, n = token.subn(f"{name}=={new}", line)
    if n != 1:
        raise BumpError(f"{lock}: the '# roots:' line has no {name}=={old}")
    lock.write_text(text[:match.start()] + new_line + text[match.end():])


def apply(proposals: list[Proposal], run_lock: bool = True) -> list[str]:
    changed = []
    for p in proposals:
        if not p.change:
            continue
        replace_spec(p.pin.file, p.pin.name, p.pin.version, p.new)
        if p.pin.pypi and p.pin.lock:
            replace_root(p.pin.lock, p.pin.pypi, p.pin.version, p.new)
        changed.append(f"{p.pin.name} {p.pin.version} -> {p.new} ({p.pin.where})")
    if changed and run_lock:
        print("refreshing the PyPI locks: make lock", flush=True)
        subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "lock"], check=True)
    return changed


# --- the release version ---------------------------------------------------------------------

def version_files() -> dict[str, list[tuple[str, str, bool]]]:
    """{file: [(regex around {v}, what it is, required)]}: every place that spells out the version."""
    return {
        "src/barehub/__init__.py": [(r'^__version__ = "{v}"$', "__version__", True)],
        "pyproject.toml": [(r'^version = "{v}"$', "[project] version", True)],
        "construct/construct.yaml": [
            (r'^version: "{v}"$', "version", True),
            (r"^default_prefix: /opt/barehub/envs/{v}$", "default_prefix", True),
            (r"^  - barehub =={v}$", "the barehub pin", True),
            (r"barehub-{v}-Linux-", "the installer name in a comment", False),
        ],
        "recipe/recipe.yaml": [(r'^  version: "{v}"$', "context.version", True)],
        # the quick start's installer and prefix (not the upgrade example's newer release)
        "README.md": [(r"barehub-{v}-Linux-", "installer names", False), (r"envs/{v}\b", "env paths", False)],
    }


def current_version(root: Path = ROOT) -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (root / "src/barehub/__init__.py").read_text(), re.M)
    if not match:
        raise BumpError("src/barehub/__init__.py has no __version__ line")
    return match[1]


def set_version(new: str, root: Path = ROOT) -> list[str]:
    """Replace the current version by `new` in every place version_files() names."""
    problems = lockcheck.calver_problems(new)
    if problems:
        raise BumpError(problems[0] + ": use YYYY.M.N, e.g. 2026.12.0")
    old = current_version(root)
    texts = {}
    for rel, patterns in version_files().items():
        text = (root / rel).read_text()
        for pattern, what, required in patterns:
            regex = re.compile(pattern.format(v=re.escape(old)), re.M)
            if required and not regex.search(text):
                raise BumpError(f"{rel}: {what} is not {old}, the version in src/barehub/__init__.py: "
                                "make them agree by hand (tests/test_versions.py says where), then run "
                                "`make version` again")
            text = regex.sub(lambda m: m[0].replace(old, new), text)
        texts[rel] = text
    for rel, text in texts.items():   # written only once every file had what it needs
        (root / rel).write_text(text)
    return list(texts)


def next_version(today: datetime.date, tags: list[str]) -> str:
    month = [t for t in tags if re.fullmatch(rf"{today.year}\.{today.month}\.\d+", t)]
    n = max((int(t.rsplit(".", 1)[1]) for t in month), default=-1) + 1
    return f"{today.year}.{today.month}.{n}"


# --- command line ------------------------------------------------------------------------------

def find_conda(given: str | None) -> str:
    conda = given or os.environ.get("CONDA_EXE") or shutil.which("conda")
    if not conda:
        raise BumpError("conda is not on PATH (and no --conda): this asks conda-forge through conda, "
                        "which only works where conda-forge is reachable (release CI). Here, read "
                        "docs/releasing.md: the pins are checked when the release workflow runs.")
    return conda


def emit_error(line: str) -> None:
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::error::{line}")
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="every pin is on conda-forge for every platform")
    c.add_argument("--conda", help="the conda to ask (default: $CONDA_EXE, then conda on PATH)")
    p = sub.add_parser("propose", help="the newest versions that pass the rule")
    p.add_argument("--conda")
    p.add_argument("--pypi", default=PYPI_JSON, help="PyPI's JSON API (default: %(default)s)")
    p.add_argument("--markdown", type=Path, help="also write the table here (the bump pull request's text)")
    p.add_argument("--apply", action="store_true", help="write the proposals, then run `make lock`")
    p.add_argument("--no-lock", action="store_true", help="with --apply: do not run `make lock`")
    p.add_argument("--changelog", action="store_true",
                   help="with --apply: list the bumps under [Unreleased] / Changed in CHANGELOG.md")
    s = sub.add_parser("set-version", help="set the release version everywhere (make version)")
    s.add_argument("version")
    n = sub.add_parser("next-version", help="print the next release version")
    n.add_argument("--date", type=datetime.date.fromisoformat, default=datetime.date.today())
    n.add_argument("--tags", type=Path, help="file with one tag per line (default: `git tag`)")
    args = parser.parse_args(argv)
    try:
        if args.command == "set-version":
            for rel in set_version(args.version):
                print(f"{rel}: {args.version}")
            found = lockcheck.version_mismatches(lockcheck.release_versions())
            for line in found:
                emit_error(line)
            return 1 if found else 0
        if args.command == "next-version":
            if args.tags:
                tags = args.tags.read_text().split()
            else:
                tags = subprocess.run(["git", "-C", str(ROOT), "tag", "--list"], capture_output=True,
                                      text=True, check=True).stdout.split()
            print(next_version(args.date, tags))
            return 0
        forge = CondaForge(find_conda(args.conda))
        all_pins = pins()
        if args.command == "check":
            problems = check(forge, all_pins)
            for line in problems:
                emit_error(line)
            if not problems:
                print(f"ok: {len(all_pins)} pins are on conda-forge for {', '.join(PLATFORMS)}")
            return 1 if problems else 0
        proposals = propose(forge, PyPI(args.pypi), all_pins)
        text = table(proposals)
        print(text, end="")
        if args.markdown:
            args.markdown.write_text(
                "Pins proposed by `scripts/bump.py propose`: the newest version of each that is on "
                f"conda-forge for {', '.join(PLATFORMS)} and, where the tests install it from PyPI, "
                "on PyPI too.\n\n" + text)
        if args.apply:
            changed = apply(proposals, run_lock=not args.no_lock)
            print("\n".join(changed) if changed else "nothing to bump")
            if changed and args.changelog:
                import release

                release.changelog_add("Changed", [f"Pinned {c}." for c in changed])
        return 0
    except BumpError as e:
        emit_error(f"bump.py: {e}")
        return 1
    except subprocess.CalledProcessError as e:
        emit_error(f"bump.py: {' '.join(map(str, e.cmd))} failed with exit {e.returncode}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
