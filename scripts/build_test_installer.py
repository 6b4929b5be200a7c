#!/usr/bin/env python3
"""Build a self-extracting test installer that stands in for constructor's .sh.

    python scripts/build_test_installer.py --version V --wheels build/wheels \\
        --requirements construct/pypi.lock [--requirements FILE ...] \\
        [--barehub-wheel PATH] [--python /usr/bin/python3] [--compression gz|zst] \\
        [--flavor NAME] --out build/test-installer/barehub-V-Linux-x86_64.sh

The real product is a conda constructor installer, which cannot be built
without conda-forge. This script makes an installer with the same command
line and the same post_install contract as constructor 3.16's .sh installer,
so tests can install barehub the way an administrator does:

    bash barehub-V-Linux-x86_64.sh -b -p /opt/barehub/envs/V

Only the way the environment is made differs: it is a venv from --python
(the machine's /usr/bin/python3 by default) into which pip installs, fully
offline, the wheels embedded in the installer.

Layout of the output file: a POSIX shell header, then a line holding only
MARKER (below), then a tar archive (gzip or zstd) with

    wheels/*.whl               exactly the wheels the requirements resolve to
    requirements/NN-<name>     the requirement files, in the order given
    post_install.sh            the hook (post_install/post_install.sh)
    extra_files/<path>         only with --flavor: files copied to $PREFIX/<path>
                               before the hook, like constructor's extra_files

--flavor NAME makes the test installer of a flavor (flavors/NAME.yaml,
docs/flavors.md): its lock flavors/NAME.pypi.lock is installed after the
other requirement files, its examples land in $PREFIX/share/barehub/examples/
and share/barehub/flavor.json records the flavor, where scripts/flavor.py
puts them in the real installer; INSTALLER_NAME is barehub-NAME. Reading the
flavor needs ruamel.yaml (the test venv has it; /usr/bin/python3 may not).

The header finds the payload through the marker line (so editing the header
cannot break extraction) and checks it against the sha256 it records.

Which wheels are needed is decided by pip itself: a dry-run resolution
(`pip install --dry-run --report`) of the requirements and barehub's wheel
against the wheelhouse, with --python. Exits 0 on success, 1 when the inputs
are unusable (missing wheels, a requirement file pip could not read once
copied into the payload, ...).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POST_INSTALL = REPO / "post_install" / "post_install.sh"
NAME = "barehub"
PLAT = "linux-64"
# The line that ends the header; the payload starts on the next byte.
MARKER = "__BAREHUB_TEST_INSTALLER_PAYLOAD_BELOW__"
# Mode and time of every payload member: the payload only depends on its inputs.
MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))  # 1980-01-01
SAFE = re.compile(r"^[A-Za-z0-9._+-]+$")


class BuildError(Exception):
    pass


def clean_pip_env() -> dict[str, str]:
    """The caller's environment without any pip configuration (no index, no config file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PYTHONNOUSERSITE="1")
    return env


def check_requirement_file(path: Path) -> None:
    """The payload holds the file alone: options and nested files would not resolve there."""
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-") or "://" in line or line.startswith((".", "/")):
            raise BuildError(
                f"{path}:{n}: '{line}': only plain requirements (name==version) are supported in a "
                "requirement file of the test installer (options, URLs and paths would not resolve "
                "inside the installer's payload)")


def python_version(python: str) -> str:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True, env=clean_pip_env())
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"cannot run {python}: {e}") from e
    return out.stdout.strip()


def resolve(python: str, wheels: Path, requirements: list[Path], barehub_wheel: Path) -> list[Path]:
    """The wheel files pip installs for these requirements, offline, from the wheelhouse."""
    with tempfile.TemporaryDirectory(prefix="barehub-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--no-index", "--find-links", str(wheels),
               "--only-binary=:all:", "--no-cache-dir"]
        for r in requirements:
            cmd += ["-r", str(r)]
        cmd.append(str(barehub_wheel))
        r = subprocess.run(cmd, capture_output=True, text=True, env=clean_pip_env())
        if r.returncode != 0:
            raise BuildError(
                f"pip could not resolve the requirements offline from {wheels} "
                f"(run `make wheels` to fill it):\n{r.stderr.strip()}")
        data = json.loads(report.read_text())
    files = []
    for item in data.get("install", []):
        url = item.get("download_info", {}).get("url", "")
        parsed = urlparse(url)
        path = Path(unquote(parsed.path))
        if parsed.scheme != "file" or path.suffix != ".whl":
            raise BuildError(f"pip resolved {item.get('metadata', {}).get('name')} to {url}, not a local wheel")
        files.append(path)
    if not files:
        raise BuildError("pip resolved nothing to install")
    return sorted(set(files), key=lambda p: p.name)


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, src: Path | None = None,
         mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, MTIME, 0, 0, "root", "root"
    if src is not None:
        info.size = src.stat().st_size
        with src.open("rb") as f:
            tar.addfile(info, f)
    else:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
    info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
    tar.addfile(info)


def flavor_extras(name: str, version: str) -> tuple[Path, list[tuple[str, bytes]]]:
    """A flavor's lock, and its files as (path under $PREFIX, content), as scripts/flavor.py ships them."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import flavor
    except ImportError as e:
        raise BuildError(f"--flavor needs scripts/flavor.py and ruamel.yaml ({e}): run this with the test "
                         "venv's python (.venv-test/bin/python, `make test-deps`)") from e
    if not flavor.flavor_file(name).is_file():
        raise BuildError(f"no flavor {name!r}: flavors/ has {flavor.flavor_names()}")
    data = flavor.load(name)
    found = flavor.problems(name, data, flavor.base_info())
    if found:
        raise BuildError("\n".join(found))
    lock = flavor.lock_file(name)
    if not lock.is_file():
        raise BuildError(f"{lock} not found: run `make flavor-lock FLAVOR={name}`, then `make wheels`")
    files = [(f"{flavor.EXAMPLES_DEST}/{Path(p).name}", (flavor.FLAVORS_DIR / p).read_bytes())
             for p in data["examples"]]
    record = {"flavor": name, "installer": f"{NAME}-{name}", "version": version, "specs": data["specs"]}
    files.append((flavor.FLAVOR_JSON_DEST, (json.dumps(record, indent=1) + "\n").encode()))
    return lock, files


def write_payload(out: Path, wheel_files: list[Path], requirements: list[tuple[str, Path]],
                  post_install: Path, compression: str,
                  extra_files: list[tuple[str, bytes]] = ()) -> None:
    """Write the tar payload to `out`, compressed."""
    def members(tar: tarfile.TarFile) -> None:
        _add_dir(tar, "wheels")
        for w in wheel_files:
            _add(tar, f"wheels/{w.name}", src=w)
        _add_dir(tar, "requirements")
        for name, path in requirements:
            _add(tar, f"requirements/{name}", data=path.read_bytes())
        # Executable like constructor makes a hook with a shebang (it runs it directly).
        data = post_install.read_bytes()
        _add(tar, "post_install.sh", data=data, mode=0o755 if data.startswith(b"#!") else 0o644)
        if extra_files:
            made = set()
            for dest, content in extra_files:
                parts = Path(dest).parts
                for i in range(len(parts)):
                    d = "/".join(("extra_files",) + parts[:i])
                    if d not in made:
                        made.add(d)
                        _add_dir(tar, d)
                _add(tar, f"extra_files/{dest}", data=content)

    if compression == "gz":
        with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            members(tar)
    else:
        zstd = shutil.which("zstd")
        if zstd is None:
            raise BuildError("--compression zst needs the zstd program (apt-get install zstd)")
        with out.open("wb") as raw:
            proc = subprocess.Popen([zstd, "-q", "-3", "-T0", "-c"], stdin=subprocess.PIPE, stdout=raw)
            assert proc.stdin is not None
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                members(tar)
            proc.stdin.close()
            if proc.wait() != 0:
                raise BuildError("zstd failed")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# The header. @KEY@ placeholders are replaced by render_header(); keep it POSIX
# sh (constructor's header is too: `sh installer.sh` must work) and keep the
# marker line out of it except as the very last line.
HEADER = r"""#!/bin/sh
#
# barehub @VERSION@ test installer (@PLAT@), built by scripts/build_test_installer.py.
#
# A stand-in for the conda constructor 3.16 .sh installer, for tests: the same
# options, messages, exit codes and post_install contract, but the environment
# is a venv from @PYTHON@ into which pip installs the embedded wheels, offline.
# Where it cannot do what constructor's does, it says so here:
#   -t  constructor's runs the packages' conda-build tests (after installing
#       conda-build from the network); this one runs `pip check` in the venv.
#   -m  there are no menu shortcuts in a venv: accepted, nothing to skip.
# The payload (a tar.@COMPRESSION@) follows the line @MARKER_NOTE@ at the end
# of this header; its sha256 is @SHA256@.

set -eu

# Like constructor's: no loader or conda configuration of the caller reaches the
# install or post_install.
unset LD_LIBRARY_PATH LD_PRELOAD LD_AUDIT

case "$0" in
    *.sh) ;;
    *)
        printf 'Please run using "bash"/"dash"/"sh"/"zsh", but not "." or "source".\n' >&2
        # shellcheck disable=SC2317  # exit only when not sourced
        return 1 2>/dev/null || exit 1 ;;
esac

# What post_install.sh sees (constructor 3.16 exports the same variables).
export INSTALLER_NAME=@NAME@
export INSTALLER_VER=@VERSION_Q@
export INSTALLER_PLAT=@PLAT@
export INSTALLER_TYPE="SH"

unset CONDARC MAMBARC

this_dir=$(dirname_=$(dirname "$0") && CDPATH='' cd -- "$dirname_" && pwd)
this_path="$this_dir/$(basename "$0")"
export INSTALLER_PATH="$this_path"

# Internal settings have lower-case names: unlike PREFIX and FORCE they must
# not reach post_install, even when the caller's environment has them.
python_bin=@PYTHON_Q@
python_version=@PYVER@
barehub_wheel=@BAREHUB_WHEEL@
requirement_files=@REQUIREMENTS@
n_packages=@NPKGS@
payload_sha256=@SHA256@
decompress=@DECOMPRESS@

PREFIX=@DEFAULT_PREFIX@
batch=0
FORCE=0
keep_pkgs=0
skip_scripts=0
run_tests=0

usage="
usage: $0 [options]

Installs ${INSTALLER_NAME} ${INSTALLER_VER} (test installer: a venv from $python_bin, installed offline)

-b           run install in batch mode (without manual intervention),
             it is expected the license terms (if any) are agreed upon
-f           no error if install prefix already exists
-h           print this help message and exit
-k           do not clear the package cache after installation
-p PREFIX    install prefix, defaults to $PREFIX, must not contain spaces.
-s           skip running pre/post-link/install scripts
-m           disable the creation of menu items / shortcuts
-u           update an existing installation
-t           run package tests after installation (here: pip check)
"

die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# constructor's option letters (`bifhkp:smut` for an installer with conda in it).
# A bad option, or -p without a value: the shell names it on stderr, then the
# same line as constructor's on stdout, exit 1. Extra arguments are ignored.
while getopts "bifhkp:smut" opt; do
    case "$opt" in
        h) printf '%s\n' "$usage"; exit 2 ;;
        b) batch=1 ;;
        i) batch=0 ;;
        f|u) FORCE=1 ;;
        k) keep_pkgs=1 ;;
        p) PREFIX=$OPTARG ;;
        s) skip_scripts=1 ;;
        m) ;;
        t) run_tests=1 ;;
        ?)
            printf "ERROR: did not recognize option '%s', please try -h\n" "$opt"
            exit 1 ;;
    esac
done

# For post_install.sh.
export INSTALLER_UNATTENDED="$batch"

# With -t the unpacked payload stays until the tests have run.
clear_after_test=0
if [ "$run_tests" = 1 ] && [ "$keep_pkgs" = 0 ]; then
    clear_after_test=1
    keep_pkgs=1
fi

# The prompt's answer, as constructor's expands it: a leading ~ becomes $HOME,
# then $VARS and ${VARS} are expanded by envsubst when it is installed.
expand_answer() {
    case "$1" in
        \~*) expanded="${HOME:-}${1#\~}" ;;
        *) expanded=$1 ;;
    esac
    if command -v envsubst >/dev/null 2>&1; then
        printf '%s\n' "$expanded" | envsubst
    else
        printf '%s\n' "$expanded"
    fi
}

if [ "$batch" = 0 ]; then
    printf '\nWelcome to %s %s\n\n' "$INSTALLER_NAME" "$INSTALLER_VER"
    printf '%s will now be installed into this location:\n%s\n\n' "$INSTALLER_NAME" "$PREFIX"
    printf '  - Press ENTER to confirm the location\n'
    printf '  - Press CTRL-C to abort the installation\n'
    printf '  - Or specify a different location below\n'
    if ! command -v envsubst >/dev/null 2>&1; then
        printf '    Note: environment variables will NOT be expanded.\n'
    fi
    printf '\n[%s] >>> ' "$PREFIX"
    if ! read -r user_prefix; then
        printf '\n' >&2
        die "no answer on standard input: installation aborted (use -b to install without questions)"
    fi
    if [ -n "$user_prefix" ]; then
        case "$user_prefix" in
            *\ *) die "Cannot install into directories with spaces" ;;
        esac
        PREFIX=$(expand_answer "$user_prefix")
    fi
fi

[ -n "$PREFIX" ] || die "the install prefix is empty"
case "$PREFIX" in
    *\ *) die "Cannot install into directories with spaces" ;;
esac

reinstall=0
if [ "$FORCE" = 0 ] && [ -e "$PREFIX" ]; then
    printf "ERROR: File or directory already exists: '%s'\n" "$PREFIX" >&2
    printf 'If you want to update an existing installation, use the -u option.\n' >&2
    exit 1
elif [ -e "$PREFIX" ]; then
    reinstall=1
fi

# Run a python with none of the caller's Python or pip settings.
clean_python() {
    (
        for var in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do
            unset "$var"
        done
        unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
        PYTHONNOUSERSITE=1 PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_NO_INPUT=1 \
            PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off PIP_ROOT_USER_ACTION=ignore \
            exec "$@"
    )
}

# The machine's python makes the environment: check it before touching anything.
if [ ! -x "$python_bin" ]; then
    die "$python_bin was not found: this test installer makes the environment as a venv from it (apt-get install python3 python3-venv)"
fi
if ! clean_python "$python_bin" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    die "the venv module of $python_bin is missing or incomplete (no ensurepip): apt-get install python3-venv"
fi
found_version=$(clean_python "$python_bin" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$found_version" != "$python_version" ]; then
    die "$python_bin is Python $found_version, but this installer's wheels were resolved for Python $python_version"
fi

# The payload starts on the line after the marker (found, not counted, so that
# edits to this header cannot break it).
marker_line=$(grep -a -n -m 1 '^@MARKER@$' "$this_path" | cut -d: -f1)
[ -n "$marker_line" ] || die "$this_path is damaged: its payload marker line is missing"
payload() {
    tail -n "+$((marker_line + 1))" "$this_path"
}
if command -v sha256sum >/dev/null 2>&1; then
    got=$(payload | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$payload_sha256" ]; then
        die "$this_path is damaged (payload sha256 $got, expected $payload_sha256): download it again"
    fi
else
    printf 'WARNING: sha256sum not found: payload not verified\n' >&2
fi
decompressor=${decompress%% *}
command -v "$decompressor" >/dev/null 2>&1 || die "$decompressor is needed to unpack this installer"

if ! mkdir -p "$PREFIX"; then
    die "Could not create directory: '$PREFIX'."
fi
# pwd does not turn a leading // into /.
PREFIX=$(CDPATH='' cd -- "$PREFIX" && pwd | sed 's@^//@/@')
export PREFIX
printf 'PREFIX=%s\n' "$PREFIX"
cd "$PREFIX"
unset PYTHON_SYSCONFIGDATA_NAME _CONDA_PYTHON_SYSCONFIGDATA_NAME

# As constructor's: TMP points into the prefix while packages are installed;
# the hook gets the caller's value back (empty when it had none) and TMP_BACKUP.
export TMP_BACKUP="${TMP:-}"
export TMP="$PREFIX/install_tmp"
mkdir -p "$TMP"

# A prefix made without root: constructor's installers mark it.
if [ "$(id -u)" -ne 0 ]; then
    touch "$PREFIX/.nonadmin"
fi

# Unpacked where constructor unpacks its packages. Like constructor's, it is
# removed only at the very end of a successful install: a failing step (or a
# failing hook) leaves $PREFIX/pkgs behind.
pkgs="$PREFIX/pkgs"
printf 'Unpacking payload...\n'
rm -rf "$pkgs"
mkdir -p "$pkgs"
# shellcheck disable=SC2086  # $decompress is the decompressor and its options
payload | $decompress | tar -xf - -C "$pkgs" --no-same-owner
if [ ! -f "$pkgs/wheels/$barehub_wheel" ] || [ ! -f "$pkgs/post_install.sh" ]; then
    die "unpacking the payload failed"
fi

msgs="$PREFIX/.messages.txt"
touch "$msgs"
export FORCE

if [ "$reinstall" = 1 ] && [ -f "$PREFIX/pyvenv.cfg" ] && [ -x "$PREFIX/bin/python" ] \
        && clean_python "$PREFIX/bin/python" -c '' 2>/dev/null; then
    printf 'Updating the environment (a venv from %s)...\n' "$python_bin"
else
    printf 'Creating the environment (a venv from %s)...\n' "$python_bin"
    clean_python "$python_bin" -m venv "$PREFIX" || die "could not create a venv at $PREFIX with $python_bin"
fi

# Like constructor's `conda install --offline` of the bundled state: what is
# installed already at the same version stays as it is (-u and -f force nothing).
printf 'Installing base environment: %s packages, offline...\n' "$n_packages"
set --
for req in $requirement_files; do
    set -- "$@" -r "$pkgs/requirements/$req"
done
clean_python "$PREFIX/bin/python" -m pip install --quiet --no-index --no-cache-dir --only-binary=:all: \
    --find-links "$pkgs/wheels" "$@" "$pkgs/wheels/$barehub_wheel" \
    || die "installing the packages into $PREFIX failed"

# Like constructor's extra_files: in place before post_install runs.
if [ -d "$pkgs/extra_files" ]; then
    cp -R "$pkgs/extra_files/." "$PREFIX/" || die "copying the extra files into $PREFIX failed"
fi

rm -rf "$PREFIX/install_tmp"
export TMP="$TMP_BACKUP"

if [ "$skip_scripts" = 1 ]; then
    printf 'WARNING: skipping post_install.sh by user request\n' >&2
else
    printf 'Running post_install.sh...\n'
    # As constructor's: run directly when it has a shebang, else with sh; cwd
    # $PREFIX; no rollback when it fails, and the unpacked payload stays.
    if [ "$(head -c 2 "$pkgs/post_install.sh")" = "#!" ]; then
        chmod +x "$pkgs/post_install.sh"
        hook="$pkgs/post_install.sh"
    else
        hook="sh $pkgs/post_install.sh"
    fi
    # shellcheck disable=SC2086  # "sh PATH" when the hook has no shebang
    if ! $hook; then
        printf 'ERROR: executing post_install.sh failed\n' >&2
        exit 1
    fi
fi

if [ -f "$msgs" ]; then
    cat "$msgs"
fi
rm -f "$msgs"
if [ "$keep_pkgs" = 0 ]; then
    rm -rf "$pkgs"
fi

printf 'installation finished.\n'
if [ "$batch" = 0 ]; then
    printf 'Thank you for installing %s!\n' "$INSTALLER_NAME"
fi

if [ "$run_tests" = 1 ]; then
    printf 'INFO: Running package tests in a subshell\n'
    failed=0
    clean_python "$PREFIX/bin/python" -m pip check || failed=1
    if [ "$clear_after_test" = 1 ]; then
        rm -rf "$pkgs"
    fi
    if [ "$failed" != 0 ]; then
        printf 'ERROR: 1 test failed\n' >&2
        exit 1
    fi
fi
exit 0
"""


def render_header(values: dict[str, str]) -> str:
    text = HEADER
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise BuildError(f"unfilled header placeholders: {leftover}")
    lines = text.splitlines()
    if any(line == MARKER for line in lines):
        raise BuildError("the header holds the marker line before its end")
    return text + MARKER + "\n"


def build(args: argparse.Namespace) -> Path:
    version = args.version
    if not SAFE.match(version):
        raise BuildError(f"--version {version!r}: use letters, digits and . _ + - only")
    wheels = args.wheels.resolve()
    if not wheels.is_dir():
        raise BuildError(f"{wheels} is not a directory (run `make wheels`)")
    barehub_wheel = (args.barehub_wheel or wheels / f"{NAME}-{version}-py3-none-any.whl").resolve()
    if not barehub_wheel.is_file():
        raise BuildError(f"{barehub_wheel} not found (run `make wheels`, which builds barehub's wheel)")
    wheel_version = barehub_wheel.name.split("-")[1] if barehub_wheel.name.count("-") >= 4 else ""
    if wheel_version != version:
        raise BuildError(f"{barehub_wheel.name} is not barehub {version}: rebuild it (`make wheels`)")
    post_install = args.post_install.resolve()
    if not post_install.is_file():
        raise BuildError(f"{post_install} not found")
    if not args.requirements:
        raise BuildError("give at least one --requirements file")
    installer_name, extra_files, requirement_paths = NAME, [], list(args.requirements)
    if args.flavor:
        if not SAFE.match(args.flavor):
            raise BuildError(f"--flavor {args.flavor!r}: not a flavor name")
        lock, extra_files = flavor_extras(args.flavor, version)
        installer_name = f"{NAME}-{args.flavor}"
        requirement_paths.append(lock)
    requirements: list[tuple[str, Path]] = []
    for i, r in enumerate(requirement_paths, 1):
        r = r.resolve()
        if not r.is_file():
            raise BuildError(f"{r} not found")
        check_requirement_file(r)
        base = re.sub(r"[^A-Za-z0-9._-]", "_", r.name)
        requirements.append((f"{i:02d}-{base}", r))

    pyver = python_version(args.python)
    wheel_files = resolve(args.python, wheels, [p for _, p in requirements], barehub_wheel)
    if barehub_wheel not in wheel_files:
        raise BuildError(f"pip did not pick {barehub_wheel}: is another barehub {version} wheel in {wheels}?")

    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out.parent) as tmp:
        payload = Path(tmp) / "payload"
        write_payload(payload, wheel_files, requirements, post_install, args.compression, extra_files)
        digest = sha256_of(payload)
        q = shlex.quote
        header = render_header({
            "NAME": q(installer_name),
            "VERSION": version,
            "VERSION_Q": q(version),
            "PLAT": PLAT,
            "PYTHON": args.python,
            "PYTHON_Q": q(args.python),
            "PYVER": q(pyver),
            "BAREHUB_WHEEL": q(barehub_wheel.name),
            "REQUIREMENTS": q(" ".join(name for name, _ in requirements)),
            "NPKGS": str(len(wheel_files)),
            "SHA256": digest,
            "COMPRESSION": args.compression,
            "DECOMPRESS": q("gzip -dc" if args.compression == "gz" else "zstd -dcq"),
            "DEFAULT_PREFIX": q(args.default_prefix or f"/opt/{NAME}/envs/{version}"),
            "MARKER": MARKER,
            "MARKER_NOTE": "that holds only the payload marker",
        })
        partial = Path(tmp) / out.name
        with partial.open("wb") as f:
            f.write(header.encode())
            with payload.open("rb") as p:
                shutil.copyfileobj(p, f, 1 << 20)
        partial.chmod(0o755)
        os.replace(partial, out)
    size = out.stat().st_size
    print(f"{out}: {len(wheel_files)} wheels, {len(requirements)} requirement files, "
          f"{len(extra_files)} extra files, {size / 1e6:.1f} MB, payload sha256 {digest}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", required=True, help="barehub version (INSTALLER_VER)")
    p.add_argument("--wheels", required=True, type=Path, help="wheelhouse (build/wheels)")
    p.add_argument("--requirements", action="append", type=Path, default=[],
                   help="requirement file installed by the installer (repeatable, in order)")
    p.add_argument("--barehub-wheel", type=Path,
                   help="barehub's wheel (default: WHEELS/barehub-VERSION-py3-none-any.whl)")
    p.add_argument("--python", default="/usr/bin/python3",
                   help="interpreter the installer makes the venv from; also resolves the wheels "
                        "(default: /usr/bin/python3)")
    p.add_argument("--compression", choices=("gz", "zst"), default="gz",
                   help="payload compression (zst needs zstd where the installer runs)")
    p.add_argument("--flavor", help="a flavor (flavors/NAME.yaml): add its lock, examples and flavor.json")
    p.add_argument("--out", required=True, type=Path, help="installer to write (.sh)")
    # For tests: another hook in the payload, another default prefix.
    p.add_argument("--post-install", type=Path, default=DEFAULT_POST_INSTALL, help=argparse.SUPPRESS)
    p.add_argument("--default-prefix", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.out.suffix != ".sh":
        p.error("--out must end with .sh (the installer refuses to run otherwise, like constructor's)")
    try:
        build(args)
    except BuildError as e:
        print(f"build_test_installer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
