"""The test installer of scripts/build_test_installer.py, for real.

It stands in for constructor 3.16's .sh installer: same options, same
post_install contract (tests/helpers.py: constructor_env). Two installers are
built once per module from build/wheels:

- "real": the hub environment of construct/pypi.lock and the real
  post_install.sh, installed once (in a network namespace with no network) and
  reused by the tests that need an installed barehub;
- "hook": only barehub's wheel and its dependencies, with a stand-in hook that
  records the environment and cwd it was run with (a few seconds per install).

Everything lives in a world-readable directory under /var/tmp, removed at the end.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import LOCK, require_root
from helpers import REPO, constructor_env, version

V = version()
BUILDER = REPO / "scripts" / "build_test_installer.py"
INSTALLER = f"barehub-{V}-Linux-x86_64.sh"
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
NO_NETWORK = REPO / "scripts" / "ci" / "no-network"
SMOKE = REPO / "scripts" / "ci" / "smoke"

_spec = importlib.util.spec_from_file_location("build_test_installer", BUILDER)
builder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builder)

# Records what the installer gives post_install. `set -eu` like the real hook:
# an unset HOOK_OUT fails it.
HOOK = r"""#!/bin/bash
set -eu
out=$HOOK_OUT
env -0 > "$out.env"
pwd > "$out.cwd"
"$PREFIX/bin/python" -c 'import barehub, jinja2; print(barehub.__version__)' > "$out.python"
if [ "${HOOK_FAIL:-0}" = 1 ]; then
    echo "hook: failing on purpose" >&2
    exit 7
fi
"""


@pytest.fixture(scope="module")
def work():
    require_root()
    d = Path(tempfile.mkdtemp(prefix="barehub-test-installer-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def build(out: Path, wheels: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BUILDER), "--version", V, "--wheels", str(wheels), *args,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)


def run(installer: Path | str, *args: str, env: dict[str, str] | None = None, cwd: Path | str = "/",
        stdin: str | None = None, shell: str = "bash", offline: bool = False, watch: bool = False,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run an installer like an administrator: `bash INSTALLER ARGS` with the caller's environment.

    watch: under scripts/ci/no-network, as release CI runs the real one (exit 3 if anything it
    starts tries to reach the network)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BAREHUB_", "HOOK_"))}
    full_env.update(env or {})
    cmd = [shell, str(installer), *args]
    if watch:
        cmd = [str(NO_NETWORK), *cmd]
    if offline:
        cmd = ["unshare", "--net", "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          input=stdin, stdin=subprocess.DEVNULL if stdin is None else None)


def open_payload(installer: Path) -> tarfile.TarFile:
    """The tar after the marker line, read the way the header finds it."""
    data = installer.read_bytes()
    marker = ("\n" + builder.MARKER + "\n").encode()
    return tarfile.open(fileobj=io.BytesIO(data[data.index(marker) + len(marker):]), mode="r:gz")


def payload_members(installer: Path) -> dict[str, tarfile.TarInfo]:
    with open_payload(installer) as tar:
        return {m.name: m for m in tar.getmembers()}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_names(members) -> set[str]:
    return {normalize(n.split("/", 1)[1].split("-", 1)[0]) for n in members if n.startswith("wheels/") and n.endswith(".whl")}


def header_of(installer: Path) -> str:
    data = installer.read_bytes()
    return data[: data.index(("\n" + builder.MARKER + "\n").encode()) + 1].decode()


def hook_record(out: Path) -> SimpleNamespace:
    env = dict(item.split("=", 1) for item in Path(f"{out}.env").read_text().split("\0") if "=" in item)
    return SimpleNamespace(env=env, cwd=Path(f"{out}.cwd").read_text().strip(),
                           python=Path(f"{out}.python").read_text().strip())


def network_namespace_works() -> bool:
    """`unshare --net` gives a namespace whose only interface is lo (down): no network at all."""
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--net", "--", "cat", "/proc/net/dev"], capture_output=True, text=True)
    ifaces = {line.split(":")[0].strip() for line in r.stdout.splitlines() if ":" in line}
    return r.returncode == 0 and ifaces == {"lo"}


@pytest.fixture(scope="module")
def hook_installer(work, wheelhouse) -> Path:
    reqs = work / "hook-requirements.txt"
    reqs.write_text("# nothing beyond barehub's own dependencies\n")
    hook = work / "hook.sh"
    hook.write_text(HOOK)
    out = work / "hook" / INSTALLER
    r = build(out, wheelhouse, "--requirements", str(reqs), "--post-install", str(hook))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def real(work, wheelhouse):
    """The hub installer, installed once into BASE/envs/V with BAREHUB_NO_START=1, offline."""
    out = work / "real" / INSTALLER
    t0 = time.monotonic()
    r = build(out, wheelhouse, "--requirements", str(LOCK))
    assert r.returncode == 0, r.stderr
    built = time.monotonic() - t0
    base = work / "opt" / "barehub"
    prefix = base / "envs" / V
    offline = network_namespace_works()
    t0 = time.monotonic()
    # A pip index in the caller's environment must not matter: the install is offline, and
    # watched by scripts/ci/no-network like release CI's install of the real installer.
    result = run(out, "-b", "-p", str(prefix), offline=offline, watch=shutil.which("strace") is not None,
                 env={"BAREHUB_NO_START": "1", "PIP_INDEX_URL": "http://192.0.2.1:9/simple"})
    installed = time.monotonic() - t0
    print(f"real installer: built in {built:.1f} s, installed in {installed:.1f} s (offline={offline})")
    return SimpleNamespace(installer=out, base=base, prefix=prefix, result=result, offline=offline)


# --- the command line ------------------------------------------------------------------

def test_help_lists_the_flags_and_exits_2(hook_installer):
    r = run(hook_installer, "-h")
    assert r.returncode == 2, r.stderr
    for flag in ("-b", "-f", "-h", "-k", "-p PREFIX", "-s", "-m", "-u", "-t"):
        assert f"\n{flag} " in r.stdout, (flag, r.stdout)
    assert f"/opt/barehub/envs/{V}" in r.stdout, "the default prefix is shown"


@pytest.mark.parametrize("args, named", [(["-x"], "illegal option -- x"), (["-b", "-p"], "requires an argument -- p")],
                         ids=["unknown", "no-prefix-arg"])
def test_bad_usage_exits_1_like_constructors(hook_installer, work, args, named):
    """constructor's getopts loop: the shell names the option on stderr, the header prints
    `ERROR: did not recognize option '?'` on stdout (the letter getopts gives it), no usage, exit 1."""
    r = run(hook_installer, *args, cwd=work)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == "ERROR: did not recognize option '?', please try -h\n", r.stdout
    assert named in r.stderr and "usage:" not in r.stdout + r.stderr


def test_extra_arguments_are_ignored(hook_installer, work):
    prefix = work / "h-extra" / "envs" / V
    out = work / "h-extra-hook"
    r = run(hook_installer, "-b", "-p", str(prefix), "extra", "-z", env={"HOOK_OUT": str(out)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert hook_record(out).env["PREFIX"] == str(prefix)


def test_i_m_and_t_are_accepted(hook_installer, work):
    """-i undoes -b (the prompt is asked), -m has no shortcuts to skip, -t runs the stand-in tests."""
    prefix = work / "h-imt" / "envs" / V
    out = work / "h-imt-hook"
    r = run(hook_installer, "-b", "-i", "-m", "-t", "-p", str(prefix), stdin="\n", env={"HOOK_OUT": str(out)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{prefix}] >>> " in r.stdout, "-i after -b: interactive again"
    assert hook_record(out).env["INSTALLER_UNATTENDED"] == "0"
    assert "INFO: Running package tests in a subshell" in r.stdout
    assert r.stdout.index("installation finished.") < r.stdout.index("INFO: Running package tests")
    assert not (prefix / "pkgs").exists(), "-t without -k clears the package cache after the tests"


def test_header_is_posix_sh_and_shellcheck_clean(hook_installer, work):
    # `sh installer.sh` (dash here) works, like with constructor's installers.
    r = run(hook_installer, "-h", shell="sh")
    assert r.returncode == 2 and "-u " in r.stdout, r.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test-deps installs it)")
    header = work / "header.sh"
    header.write_text(header_of(hook_installer))
    sc = subprocess.run(["shellcheck", "--severity=style", "-s", "sh", str(header)], capture_output=True, text=True)
    assert sc.returncode == 0, sc.stdout


def test_prefix_with_spaces_is_refused(hook_installer, work):
    r = run(hook_installer, "-b", "-p", str(work / "with space" / "envs" / V))
    assert r.returncode == 1 and "spaces" in r.stderr
    assert not (work / "with space").exists()


# --- the payload -----------------------------------------------------------------------

def test_payload_holds_only_the_needed_wheels(hook_installer, real):
    hook = payload_members(hook_installer)
    assert wheel_names(hook) == {"barehub", "jinja2", "markupsafe"}, sorted(hook)
    assert "requirements/01-hook-requirements.txt" in hook
    assert hook["post_install.sh"].mode == 0o755, "a hook with a shebang is executable, like constructor's"

    members = payload_members(real.installer)
    names = wheel_names(members)
    locked = {normalize(line.split("==")[0]) for line in LOCK.read_text().splitlines()
              if line and not line.startswith("#")}
    assert names == locked | {"barehub"}, names ^ (locked | {"barehub"})
    assert "jupyter_server" not in names, "test-only single-user packages stay out unless asked for"
    assert [n for n in members if n.startswith("requirements/")] == ["requirements/01-pypi.lock"]
    with open_payload(real.installer) as tar:
        assert tar.extractfile("post_install.sh").read() == (REPO / "post_install/post_install.sh").read_bytes()


def test_damaged_payload_is_refused_before_anything_is_written(hook_installer, work):
    damaged = work / "damaged" / INSTALLER
    damaged.parent.mkdir()
    data = bytearray(hook_installer.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    prefix = work / "damaged-prefix" / "envs" / V
    r = run(damaged, "-b", "-p", str(prefix))
    assert r.returncode == 1 and "damaged" in r.stderr, r.stderr
    assert not prefix.exists()


@pytest.mark.parametrize("case", ["no-python", "no-venv"])
def test_missing_python_or_venv_fails_clearly(hook_installer, work, case):
    """The header's interpreter is swapped for a missing one, or for one without venv/ensurepip."""
    d = work / case
    d.mkdir()
    if case == "no-python":
        python, message = d / "python3", f"{d}/python3 was not found"
    else:
        python, message = d / "python3", "venv module of"
        python.write_text('#!/bin/sh\ncase "$*" in *ensurepip*) exit 1 ;; esac\nexec /usr/bin/python3 "$@"\n')
        python.chmod(0o755)
    data = hook_installer.read_bytes()
    assert data.count(b"python_bin=/usr/bin/python3\n") == 1
    broken = d / INSTALLER
    broken.write_bytes(data.replace(b"python_bin=/usr/bin/python3\n", f"python_bin={python}\n".encode()))
    prefix = d / "prefix" / "envs" / V
    r = run(broken, "-b", "-p", str(prefix))
    assert r.returncode == 1
    assert message in r.stderr and "python3-venv" in r.stderr, r.stderr
    assert not prefix.exists(), "checked before anything is written"


# --- the real installer: hub environment + real post_install, offline -------------------

def test_real_install_puts_the_hub_env_in_place_and_runs_post_install(real):
    r = real.result
    assert r.returncode == 0, r.stdout + r.stderr
    n = len([m for m in payload_members(real.installer) if m.endswith(".whl")])
    for line in (f"PREFIX={real.prefix}", "Unpacking payload...", f"Installing base environment: {n} packages, offline...",
                 "Running post_install.sh...", "installation finished."):
        assert line in r.stdout.splitlines(), (line, r.stdout)
    # The real hook ran: `barehub install` derived the base from BASE/envs/V.
    assert f"-m barehub install --base {real.base} --prefix {real.prefix} --no-start" in r.stdout
    for exe in ("bin/jupyterhub", "bin/traefik", "bin/jupyterhub-idle-culler", "bin/python"):
        assert os.access(real.prefix / exe, os.X_OK), exe
    assert (real.base / "barehub.toml").is_file()
    assert (real.base / "generated" / "jupyterhub.service").is_file()
    assert os.readlink(real.base / "hub") == f"envs/{V}"
    assert not (real.prefix / "pkgs").exists(), "the unpacked payload is removed"
    hub = subprocess.run([str(real.prefix / "bin/jupyterhub"), "--version"], capture_output=True, text=True)
    assert hub.stdout.strip() == "6.1.1", hub.stderr
    py = subprocess.run([str(real.prefix / "bin/python"), "-c", "import barehub; print(barehub.__version__)"],
                        capture_output=True, text=True)
    assert py.stdout.strip() == V, py.stderr


def test_install_needs_no_network(real):
    if not real.offline:
        pytest.skip("`unshare --net` is not available here: the install ran with the host's network")
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (`make test-deps` installs it): the install was not watched")
    assert real.result.returncode == 0, real.result.stderr
    assert "no-network: bash made no attempt to reach the network" in real.result.stdout


def test_no_network_catches_what_tries_to_reach_the_network(work, wheelhouse):
    """The watcher itself: a hook that tries an outside address (and carries on when that
    fails, as miniforge#883's downloads did) fails the install; loopback does not."""
    if shutil.which("strace") is None or not network_namespace_works():
        pytest.skip("needs strace and `unshare --net` (`make test-deps` installs strace)")
    for target, expected in (("192.0.2.1/80", 3), ("127.0.0.1/9", 0)):
        hook = work / f"net-hook-{expected}.sh"
        hook.write_text(f"#!/bin/bash\n(exec 3<>/dev/tcp/{target}) 2>/dev/null || true\n")
        installer = work / f"net-{expected}" / INSTALLER
        reqs = work / "net-requirements.txt"
        reqs.write_text("# nothing beyond barehub's own dependencies\n")
        r = build(installer, wheelhouse, "--requirements", str(reqs), "--post-install", str(hook))
        assert r.returncode == 0, r.stderr
        r = run(installer, "-b", "-p", str(work / f"net-{expected}-prefix" / "envs" / V), offline=True, watch=True)
        assert r.returncode == expected, r.stdout + r.stderr
        if expected:
            assert re.search(r"connect to 192\.0\.2\.1:80 by \S+/pkgs/post_install\.sh", r.stderr), r.stderr
        else:
            assert "made no attempt to reach the network" in r.stdout


def test_existing_prefix_without_f_or_u_is_refused(real):
    assert real.result.returncode == 0
    toml = real.base / "barehub.toml"
    before = toml.stat().st_mtime_ns
    r = run(real.installer, "-b", "-p", str(real.prefix), env={"BAREHUB_NO_START": "1"})
    assert r.returncode == 1
    assert f"already exists: '{real.prefix}'" in r.stderr and "use the -u option" in r.stderr
    assert "Running post_install.sh" not in r.stdout
    assert toml.stat().st_mtime_ns == before


def test_update_with_u_installs_over_the_prefix_and_keeps_admin_files(real):
    assert real.result.returncode == 0
    mine = real.base / "jupyterhub_config.d" / "50-mine.py"
    mine.write_text("c.Spawner.default_url = '/lab'\n")
    secret = (real.base / "state" / "jupyterhub_cookie_secret").read_text()
    r = run(real.installer, "-b", "-u", "-p", str(real.prefix), offline=real.offline,
            env={"BAREHUB_NO_START": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Updating the environment" in r.stdout and "Running post_install.sh..." in r.stdout
    assert mine.read_text() == "c.Spawner.default_url = '/lab'\n"
    assert (real.base / "state" / "jupyterhub_cookie_secret").read_text() == secret
    assert os.readlink(real.base / "hub") == f"envs/{V}"
    assert os.access(real.prefix / "bin/jupyterhub", os.X_OK)


def test_smoke_script_starts_proxy_and_hub_from_the_units(real):
    """scripts/ci/smoke, release CI's test where systemd cannot run (ppc64le under QEMU), on this
    install: the units' own commands, the hub answering through the proxy, in a network namespace
    with only lo (the default ports 80, 81 and 99 are free there)."""
    if not network_namespace_works():
        pytest.skip("`unshare --net` is not available here")
    assert real.result.returncode == 0
    r = subprocess.run(["unshare", "--net", "--", "bash", "-c", 'ip link set lo up && exec "$0" "$@"',
                        str(SMOKE), str(real.base)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SMOKE_TIMEOUT": "120"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/hub/api/ answers through the proxy" in r.stdout
    assert "render-proxy" in r.stdout, "the proxy's ExecStartPre ran first"


# --- post_install's contract (stand-in hook) ---------------------------------------------

def test_post_install_gets_constructors_environment_and_cwd(hook_installer, work):
    prefix = work / "h-env" / "envs" / V
    out = work / "h-env-hook"
    caller = {"HOOK_OUT": str(out), "BAREHUB_BASE": str(work / "h-env-base"), "BAREHUB_NO_START": "1",
              "LD_LIBRARY_PATH": "/nonexistent/lib", "CONDARC": "/nonexistent/condarc",
              "LD_AUDIT": "/nonexistent/audit.so", "TMP": "/caller/tmp"}
    if LIBC.exists():
        caller["LD_PRELOAD"] = str(LIBC)
    # Started by a relative path from the installer's directory: INSTALLER_PATH is still absolute.
    r = run(f"./{INSTALLER}", "-b", "-p", str(prefix), cwd=hook_installer.parent, env=caller)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = hook_record(out)
    expected = constructor_env(prefix, V, installer_path=str(hook_installer), force=False,
                               extra={k: caller[k] for k in ("BAREHUB_BASE", "BAREHUB_NO_START", "HOOK_OUT")})
    keys = ["PREFIX", "INSTALLER_NAME", "INSTALLER_VER", "INSTALLER_PLAT", "INSTALLER_TYPE", "INSTALLER_PATH",
            "INSTALLER_UNATTENDED", "FORCE", "BAREHUB_BASE", "BAREHUB_NO_START", "HOOK_OUT"]
    assert {k: rec.env.get(k) for k in keys} == {k: expected[k] for k in keys}
    assert rec.env["TMP"] == rec.env["TMP_BACKUP"] == "/caller/tmp", "the caller's TMP, given back"
    for unset in ("LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT", "CONDARC", "OLD_LD_LIBRARY_PATH"):
        assert unset not in rec.env, unset
    for internal in ("python_bin", "pkgs", "batch", "keep_pkgs", "reinstall"):
        assert internal not in rec.env, internal
    assert rec.cwd == str(prefix), "post_install runs in $PREFIX"
    assert rec.python == V, "the environment is in place before post_install"
    assert not (prefix / "pkgs").exists()

    # Without TMP in the caller's environment, the hook gets both, empty (constructor's does).
    r = run(hook_installer, "-b", "-f", "-p", str(prefix), env={k: v for k, v in caller.items() if k != "TMP"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert hook_record(out).env.get("TMP") == hook_record(out).env.get("TMP_BACKUP") == ""

    # Again over the same prefix: -f and -u both set FORCE=1 (and -u needs no -f), and
    # install the same packages again without forcing anything: a file added to the
    # installed barehub package survives, as it would under constructor's
    # `conda install --offline` of the same explicit state.
    site = Path(subprocess.run([str(prefix / "bin/python"), "-c", "import barehub, os; print(os.path.dirname(barehub.__file__))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "local-marker").write_text("kept\n")
    for flag in ("-f", "-u"):
        r = run(hook_installer, "-b", flag, "-p", str(prefix), env=caller)
        assert r.returncode == 0, r.stdout + r.stderr
        assert hook_record(out).env["FORCE"] == "1", flag
        assert (site / "local-marker").read_text() == "kept\n", f"{flag} reinstalled barehub"


def test_interactive_install_asks_for_the_location(hook_installer, work):
    typed = work / "h-typed" / "envs" / V
    offered = work / "h-offered" / "envs" / V
    out = work / "h-typed-hook"
    # Under sh (dash): the header is POSIX, like constructor's.
    r = run(hook_installer, "-p", str(offered), stdin=f"{typed}\n", env={"HOOK_OUT": str(out)}, shell="sh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{offered}] >>> " in r.stdout and "Press ENTER to confirm the location" in r.stdout
    assert "Thank you for installing barehub!" in r.stdout
    assert not offered.exists() and (typed / "bin/python").exists()
    rec = hook_record(out)
    assert rec.env["INSTALLER_UNATTENDED"] == "0" and rec.env["PREFIX"] == str(typed)

    # No answer at all (stdin closed): nothing is installed.
    r = run(hook_installer, "-p", str(offered), stdin="")
    assert r.returncode == 1 and "no answer" in r.stderr
    assert not offered.exists()

    # $VARS in the answer are expanded (envsubst), and a leading ~ is $HOME, as constructor's does.
    if shutil.which("envsubst") is None:
        pytest.skip("envsubst is not installed (gettext-base): constructor's header expands $VARS only with it")
    home = work / "h-home"
    home.mkdir()
    r = run(hook_installer, "-p", str(offered), stdin="$BAREHUB_T_TOP/vars/envs/$BAREHUB_T_V\n",
            env={"HOOK_OUT": str(out), "BAREHUB_T_TOP": str(work / "h-typed"), "BAREHUB_T_V": V})
    assert r.returncode == 0, r.stdout + r.stderr
    assert hook_record(out).env["PREFIX"] == str(work / "h-typed" / "vars" / "envs" / V)
    r = run(hook_installer, "-p", str(offered), stdin=f"~/envs/{V}\n", env={"HOOK_OUT": str(out), "HOME": str(home)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert hook_record(out).env["PREFIX"] == str(home / "envs" / V)


def test_skip_scripts_and_keep_pkgs(hook_installer, work):
    prefix = work / "h-skip" / "envs" / V
    out = work / "h-skip-hook"
    r = run(hook_installer, "-b", "-s", "-k", "-p", str(prefix), env={"HOOK_OUT": str(out)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING: skipping post_install.sh by user request" in r.stderr
    assert "Running post_install.sh" not in r.stdout and not Path(f"{out}.env").exists()
    assert (prefix / "pkgs" / "post_install.sh").is_file(), "-k keeps the unpacked payload"
    assert list((prefix / "pkgs" / "wheels").glob("barehub-*.whl"))
    py = subprocess.run([str(prefix / "bin/python"), "-c", "import barehub"], capture_output=True, text=True)
    assert py.returncode == 0, py.stderr


def test_failing_post_install_exits_1_without_rollback(hook_installer, work):
    prefix = work / "h-fail" / "envs" / V
    out = work / "h-fail-hook"
    r = run(hook_installer, "-b", "-p", str(prefix), env={"HOOK_OUT": str(out), "HOOK_FAIL": "1"})
    assert r.returncode == 1
    assert "hook: failing on purpose" in r.stderr
    assert r.stderr.rstrip().endswith("ERROR: executing post_install.sh failed")
    assert "installation finished." not in r.stdout
    assert (prefix / "bin" / "python").exists(), "nothing is rolled back"
    assert (prefix / "pkgs" / "post_install.sh").is_file(), "the unpacked payload stays, as with constructor's"


def test_edited_header_relative_prefix_and_any_cwd(hook_installer, work):
    """The payload is found by its marker line: lines added to the header do not break it."""
    edited = work / "edited" / INSTALLER
    edited.parent.mkdir()
    data = hook_installer.read_bytes()
    first_line_end = data.index(b"\n") + 1
    edited.write_bytes(data[:first_line_end] + b"# a local note\n# and another one, longer than the first\n"
                       + data[first_line_end:])
    cwd = work / "elsewhere"
    cwd.mkdir()
    out = work / "h-edited-hook"
    r = run(edited, "-b", "-p", f"rel/envs/{V}", cwd=cwd, env={"HOOK_OUT": str(out)})
    assert r.returncode == 0, r.stdout + r.stderr
    rec = hook_record(out)
    assert rec.env["PREFIX"] == str(cwd / "rel" / "envs" / V), "a relative -p is made absolute"
    assert rec.env["INSTALLER_PATH"] == str(edited)


# --- the builder ---------------------------------------------------------------------------

def test_builder_refuses_what_the_payload_cannot_install(work, wheelhouse):
    nested = work / "nested.txt"
    nested.write_text("-r other.txt\n")
    r = build(work / "b1" / INSTALLER, wheelhouse, "--requirements", str(nested))
    assert r.returncode == 1 and "only plain requirements" in r.stderr
    missing = work / "missing.txt"
    missing.write_text("no-such-package-barehub-test==1.0\n")
    r = build(work / "b2" / INSTALLER, wheelhouse, "--requirements", str(missing))
    assert r.returncode == 1 and "make wheels" in r.stderr
    assert not (work / "b2" / INSTALLER).exists()


def test_flavored_installer_adds_the_lock_and_the_examples(work, wheelhouse):
    """--flavor: the flavor's lock after the other requirement files, its examples and flavor.json
    where the real flavor installer puts them (scripts/flavor.py). Installing one for real, and
    using the examples, is tests/system/test_systemdspawner.py."""
    sys.path.insert(0, str(REPO / "scripts"))
    import flavor  # scripts/flavor.py, as tests/test_flavors.py imports it

    name = "systemdspawner"
    r = build(work / "f0" / INSTALLER, wheelhouse, "--requirements", str(LOCK), "--flavor", "nope")
    assert r.returncode == 1 and "no flavor 'nope'" in r.stderr
    reqs = work / "flavor-requirements.txt"
    reqs.write_text("# nothing beyond barehub's own dependencies\n")
    installer = work / "f1" / f"barehub-{name}-{V}-Linux-x86_64.sh"
    r = build(installer, wheelhouse, "--requirements", str(reqs), "--flavor", name)
    assert r.returncode == 0, r.stderr
    members = payload_members(installer)
    assert [n for n in members if n.startswith("requirements/")] == [
        "requirements/01-flavor-requirements.txt", f"requirements/02-{name}.pypi.lock"]
    assert normalize(f"jupyterhub-{name}") in wheel_names(members)
    with open_payload(installer) as tar:
        assert tar.extractfile(f"requirements/02-{name}.pypi.lock").read() == flavor.lock_file(name).read_bytes()
        for example in flavor.load(name)["examples"]:
            shipped = tar.extractfile(f"extra_files/share/barehub/examples/{Path(example).name}").read()
            assert shipped == (REPO / "flavors" / example).read_bytes()
        record = json.loads(tar.extractfile("extra_files/share/barehub/flavor.json").read())
    assert record == {"flavor": name, "installer": f"barehub-{name}", "version": V,
                      "specs": flavor.load(name)["specs"]}
    header = header_of(installer)
    assert f"export INSTALLER_NAME=barehub-{name}\n" in header
    # the extra files are copied into $PREFIX before post_install runs, as constructor does
    assert header.index('"$pkgs/extra_files/."') < header.index("Running post_install.sh")
