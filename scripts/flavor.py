"""Flavors: derived installers, the base installer plus a few conda packages and example files.

One file per flavor, flavors/<name>.yaml (docs/flavors.md):

    name: slurm                       # the installer is barehub-slurm-<version>-Linux-<arch>.sh
    specs: [exact conda-forge pins]   # added to construct/construct.yaml's specs
    pypi: {conda name: PyPI name}     # where they differ, for the test lock
    examples: [paths under flavors/]  # into $PREFIX/share/barehub/examples/

and its PyPI lock, flavors/<name>.pypi.lock: the packages the flavor adds, resolved on
top of construct/pypi.lock (only those the base lock does not have).

    python scripts/flavor.py render slurm [--channel DIR] [--out DIR]
        writes build/flavors/slurm/construct.yaml (and flavor.json) for constructor
    python scripts/flavor.py lock slurm
        regenerates flavors/slurm.pypi.lock in a throwaway venv (needs PyPI)
    python scripts/flavor.py check
        checks every flavor like scripts/lockcheck.py checks the base (exit 1 on problems)

Needs ruamel.yaml and Jinja2, like lockcheck.py: both are in constructor's own environment,
which `make installer FLAVOR=...` runs this with, and in the test venv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lockcheck  # noqa: E402

ROOT = lockcheck.ROOT
FLAVORS_DIR = ROOT / "flavors"
OUT_DIR = ROOT / "build" / "flavors"
# Where a flavor's examples land in the installed environment (relative to $PREFIX).
EXAMPLES_DEST = "share/barehub/examples"
# Which flavor an environment was built as, for admins and for upgrades.
FLAVOR_JSON_DEST = "share/barehub/flavor.json"
FLAVOR_KEYS = {"name", "specs", "pypi", "examples"}
FLAVOR_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def flavor_names() -> list[str]:
    return sorted(p.stem for p in FLAVORS_DIR.glob("*.yaml"))


def flavor_file(name: str) -> Path:
    return FLAVORS_DIR / f"{name}.yaml"


def lock_file(name: str) -> Path:
    return FLAVORS_DIR / f"{name}.pypi.lock"


def load(name: str) -> dict:
    data = lockcheck.load_yaml(flavor_file(name).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{flavor_file(name)}: not a mapping")
    data.setdefault("pypi", {})
    data.setdefault("examples", [])
    return data


def base_info(environ: dict | None = None) -> dict:
    environ = {"BAREHUB_CHANNEL": str(lockcheck.LOCAL_CHANNEL)} if environ is None else environ
    return lockcheck.parse_construct(lockcheck.CONSTRUCT_YAML, environ=environ)


def problems(name: str, flavor: dict, base: dict) -> list[str]:
    """What is wrong with flavors/<name>.yaml itself (not its lock)."""
    out = []
    for key in sorted(set(flavor) - FLAVOR_KEYS):
        out.append(f"{name}: unknown key {key!r} (known: {sorted(FLAVOR_KEYS)})")
    if flavor.get("name") != name:
        out.append(f"{name}: name is {flavor.get('name')!r}, must be the file name {name!r}")
    if not FLAVOR_NAME_RE.match(name):
        out.append(f"{name}: a flavor name is lowercase letters, digits and '-'")
    specs = flavor.get("specs")
    if not isinstance(specs, list) or not specs or not all(isinstance(s, str) for s in specs):
        out.append(f"{name}: specs must be a non-empty list of conda specs")
        specs = []
    pins, loose = lockcheck.exact_pins(specs)
    out += [f"{name}: spec is not an exact pin: {s!r}" for s in loose]
    base_pins = lockcheck.exact_pins(base.get("specs", []))[0]
    for pkg in sorted(set(pins) & set(base_pins)):
        out.append(f"{name}: {pkg} is pinned by the base already; a flavor only adds packages")
    if not isinstance(flavor.get("pypi"), dict):
        out.append(f"{name}: pypi must be a mapping of conda name to PyPI name")
    examples = flavor.get("examples")
    if not isinstance(examples, list):
        out.append(f"{name}: examples must be a list of paths under flavors/")
        examples = []
    for path in examples:
        if not str(path).endswith(".example"):
            out.append(f"{name}: example {path!r} must end in .example (never loaded as it is)")
        if not (FLAVORS_DIR / str(path)).is_file():
            out.append(f"{name}: example {path!r} does not exist under {FLAVORS_DIR}")
    dests = [Path(str(p)).name for p in examples]
    if len(set(dests)) != len(dests):
        out.append(f"{name}: two examples have the same file name: {dests}")
    return out


def pypi_pins(flavor: dict) -> dict[str, str]:
    """The flavor's specs as {PyPI canonical name: version}."""
    pins = lockcheck.exact_pins(flavor["specs"])[0]
    mapping = {k.lower(): v for k, v in (flavor.get("pypi") or {}).items()}
    return {lockcheck.canonical(mapping.get(n, n)): v for n, v in pins.items()}


def lock_problems(name: str, flavor: dict) -> list[str]:
    """The flavor's pins against its lock, as tests/test_versions.py does for the base."""
    path = lock_file(name)
    if not path.is_file():
        return [f"{name}: no lock {path.relative_to(ROOT)}: run `make flavor-lock FLAVOR={name}`"]
    lock = lockcheck.read_lock(path)
    wanted = pypi_pins(flavor)
    out = []
    for pkg, version in sorted(wanted.items()):
        if pkg not in lock:
            out.append(f"{name}: {pkg}=={version} is pinned in the flavor but not in {path.name}")
        elif lock[pkg] != version:
            out.append(f"{name}: the flavor pins {pkg} {version}, {path.name} has {lock[pkg]}")
    if lockcheck.lock_roots(path) != wanted:
        out.append(f"{name}: the '# roots:' line of {path.name} is not the flavor's pins {wanted}")
    overlap = sorted(set(lock) & set(lockcheck.read_lock()))
    if overlap:
        out.append(f"{name}: {path.name} repeats packages of construct/pypi.lock: {overlap}")
    return out


def construct_info(name: str, flavor: dict, base: dict, out_dir: Path) -> dict:
    """The base installer's definition plus the flavor, with paths relative to out_dir."""
    info = json.loads(json.dumps(base))  # a deep copy of plain data
    info["name"] = f"{base['name']}-{name}"
    info["specs"] = list(base["specs"]) + list(flavor["specs"])

    def rebase(path: str) -> str:
        return os.path.relpath((lockcheck.CONSTRUCT_DIR / path).resolve(), out_dir.resolve())

    for key in lockcheck.PATH_KEYS:
        if isinstance(info.get(key), str):
            info[key] = rebase(info[key])
    extra = []
    for item in info.get("extra_files", []):
        extra.append(rebase(item) if isinstance(item, str) else {rebase(k): v for k, v in item.items()})
    for path in flavor.get("examples", []):
        src = os.path.relpath((FLAVORS_DIR / path).resolve(), out_dir.resolve())
        extra.append({src: f"{EXAMPLES_DEST}/{Path(path).name}"})
    extra.append({"flavor.json": FLAVOR_JSON_DEST})
    info["extra_files"] = extra
    return info


HEADER = """\
# Generated by scripts/flavor.py from construct/construct.yaml and flavors/{name}.yaml.
# Do not edit: change those and run `make installer FLAVOR={name}` again.
# Plain YAML (no Jinja): the local channel is already resolved.
"""


def dump_yaml(data: dict) -> str:
    """Block-style YAML (no flow lists, whose closing `]` would read as a selector), one line per value."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.sort_base_mapping_type_on_output = False
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def render(name: str, out_root: Path = OUT_DIR, environ: dict | None = None) -> Path:
    """Write out_root/<name>/construct.yaml and flavor.json; return the construct.yaml path."""
    flavor = load(name)
    base = base_info(environ)
    found = problems(name, flavor, base)
    if found:
        raise SystemExit("\n".join(found))
    out_dir = out_root / name
    out_dir.mkdir(parents=True, exist_ok=True)
    info = construct_info(name, flavor, base, out_dir)
    (out_dir / "flavor.json").write_text(json.dumps(
        {"flavor": name, "installer": info["name"], "version": info["version"], "specs": flavor["specs"]},
        indent=1) + "\n")
    text = HEADER.format(name=name) + dump_yaml(info)
    path = out_dir / "construct.yaml"
    path.write_text(text)
    return path


def lock(name: str, python: str = "/usr/bin/python3") -> Path:
    """Resolve the flavor's PyPI pins on top of construct/pypi.lock; keep only what is new."""
    flavor = load(name)
    roots = [f"{pkg}=={version}" for pkg, version in sorted(pypi_pins(flavor).items())]
    venv = ROOT / "build" / f"flavor-lock-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "--disable-pip-version-check"]
    wheels = ROOT / "build" / "wheels"
    find = ["--find-links", str(wheels)] if wheels.is_dir() else []
    # The base lock as constraints: resolving fails instead of moving a base pin.
    subprocess.run([*pip, "install", "--quiet", *find, "-c", str(lockcheck.LOCK_FILE),
                    "-r", str(lockcheck.LOCK_FILE), *roots], check=True)
    frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True).stdout
    shutil.rmtree(venv, ignore_errors=True)
    base = lockcheck.read_lock()
    new = sorted((line for line in frozen.splitlines()
                  if line.strip() and lockcheck.canonical(line.split("==")[0]) not in base),
                 key=lambda s: s.lower())
    path = lock_file(name)
    path.write_text(
        f"# PyPI equivalent of what flavors/{name}.yaml adds to the hub environment: only the\n"
        "# packages construct/pypi.lock does not have, resolved on top of it (CPython 3.11,\n"
        "# linux x86_64, like the base lock). The tests check the flavor's pins against it.\n"
        f"# Generated by `make flavor-lock FLAVOR={name}` (scripts/flavor.py lock {name}):\n"
        "# a fresh venv, `pip install -c construct/pypi.lock -r construct/pypi.lock <roots>`,\n"
        "# `pip freeze`, minus the base lock. Regenerate after changing the flavor's pins\n"
        "# or the base lock.\n"
        f"# roots: {' '.join(roots)}\n" + "\n".join(new) + "\n"
    )
    return path


def check() -> list[str]:
    base = base_info()
    out = []
    for name in flavor_names():
        flavor = load(name)
        out += problems(name, flavor, base) + lock_problems(name, flavor)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write build/flavors/<name>/construct.yaml")
    r.add_argument("name")
    r.add_argument("--channel", help="the local channel (default: build/channel)")
    r.add_argument("--out", type=Path, default=OUT_DIR)
    lk = sub.add_parser("lock", help="regenerate flavors/<name>.pypi.lock")
    lk.add_argument("name")
    lk.add_argument("--python", default="/usr/bin/python3")
    sub.add_parser("check", help="check every flavor and its lock")
    args = parser.parse_args(argv)
    if args.command in ("render", "lock") and not flavor_file(args.name).is_file():
        parser.error(f"no flavor {args.name!r}: flavors/ has {flavor_names()}")
    if args.command == "render":
        environ = {"BAREHUB_CHANNEL": os.path.abspath(args.channel or lockcheck.LOCAL_CHANNEL)}
        print(render(args.name, args.out, environ))
    elif args.command == "lock":
        print(lock(args.name, args.python))
    else:
        found = check()
        for line in found:
            print(line, file=sys.stderr)
        if not found:
            print(f"ok: {', '.join(flavor_names())}")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
