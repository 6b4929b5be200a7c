"""Fixtures: the pinned hub environment reproduced from the PyPI lock, offline."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO

WHEELS = REPO / "build" / "wheels"
LOCK = REPO / "construct" / "pypi.lock"
SINGLEUSER = REPO / "tests" / "singleuser-requirements.txt"


# What a test may start: each must be gone when its module ends.
_SERVICES = re.compile(rb"jupyterhub|traefik|idle.culler|slurmctld|slurmd|munged|pebble|chromium|nginx")
_NOT_SERVICES = {b"flock", b"make", b"timeout", b"git", b"grep", b"pgrep"}
# Every process this run starts inherits this marker (unless a test gives it a clean
# environment). With BAREHUB_TEST_LEAKS=own, only marked processes count, so that test
# runs sharing one machine never kill each other's hubs; CI runs strict (the default).
_RUN_MARK = f"BAREHUB_TEST_RUN={os.getpid()}-{time.time_ns()}".encode()
os.environ["BAREHUB_TEST_RUN"] = _RUN_MARK.split(b"=", 1)[1].decode()
_OWN_ONLY = os.environ.get("BAREHUB_TEST_LEAKS") == "own"


def _started_here() -> dict[int, str]:
    """Hub, proxy, culler, Slurm, ACME, browser and nginx processes in this pid namespace
    (not those inside a container), other than this pytest and its parents."""
    mine = os.readlink("/proc/self/ns/pid")
    ancestors, pid = set(), os.getpid()
    while pid > 1:
        ancestors.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ancestors:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != mine:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if os.path.basename(argv[0]) in _NOT_SERVICES or any(b"pytest" in a for a in argv):
            continue  # another test run, or one waiting for the tests' lock
        if not _SERVICES.search(cmdline):
            continue
        if _OWN_ONLY:
            try:
                if _RUN_MARK not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    continue
            except OSError:
                continue
        found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


@pytest.fixture(scope="module", autouse=True)
def leaves_nothing_running(request):
    """A test module leaves no hub, proxy, culler or other service running after it."""
    before = set(_started_here())
    yield
    deadline = time.monotonic() + 10
    while True:
        left = {pid: cmd for pid, cmd in _started_here().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        pytest.fail(f"{request.module.__name__} left these running (killed now):\n"
                    + "\n".join(f"  {pid}: {cmd[:300]}" for pid, cmd in sorted(left.items())), pytrace=False)


def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (creates system users and runs the hub as root); run `sudo make test`")


def fake_prefix(base: Path) -> Path:
    """BASE/envs/<version> whose bin/python runs this interpreter: an "environment"
    for `barehub install` without building one."""
    from helpers import version

    prefix = base / "envs" / version()
    (prefix / "bin").mkdir(parents=True)
    py = prefix / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    py.chmod(0o755)
    return prefix


@pytest.fixture
def base(tmp_path):
    """A not-yet-installed base with a fake environment in envs/<version>."""
    require_root()
    b = tmp_path / "barehub"
    fake_prefix(b)
    return b


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """build/wheels: every pinned wheel plus barehub's; `make wheels` fills it."""
    if not any(WHEELS.glob("barehub-*.whl")):
        print("build/wheels is empty: running `make wheels` (downloads the pinned environment once)")
        subprocess.run(["make", "-C", str(REPO), "wheels"], check=True)
    return WHEELS


@pytest.fixture(scope="session")
def scratch():
    """A world-readable scratch dir: users' servers must be able to run the env's python.

    pytest's own tmp dirs are mode 700, which breaks that (see the field notes).
    """
    d = Path(tempfile.mkdtemp(prefix="barehub-tests-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class WorldPython:
    """An interpreter with the hub's packages and a copy of barehub's sources that any
    user can reach, wherever this checkout lives: commands a test runs as another user
    (nobody, the proxy user) use it, because this checkout and its .venv-test may sit in
    a directory only root may enter (a clone under /root is mode 700)."""

    python: Path
    src: Path

    def environ(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """environ (default: os.environ) with barehub imported from the world-readable copy."""
        return {**(os.environ if environ is None else environ), "PYTHONPATH": str(self.src)}


@pytest.fixture(scope="session")
def world_python(scratch, wheelhouse) -> WorldPython:
    """A WorldPython under the world-readable scratch dir (a hub env from the wheelhouse)."""
    root = scratch / "world"
    prefix = make_env(root / "env", wheelhouse)
    src = root / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for p in [root, src, *src.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    found = WorldPython(prefix / "bin" / "python", src)
    r = subprocess.run([str(found.python), "-c", "import barehub; print(barehub.__file__)"], user="nobody",
                       env=found.environ(), cwd="/", capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == str(src / "barehub" / "__init__.py"), r.stdout + r.stderr
    return found


_ENV_TEMPLATES: dict[tuple[Path, bool], Path] = {}


def _build_env(prefix: Path, wheels: Path, singleuser: bool) -> None:
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(prefix)], check=True)
    reqs = ["-r", str(LOCK)]
    if singleuser:
        reqs += ["-r", str(SINGLEUSER)]
    barehub_wheel = max(wheels.glob("barehub-*.whl"))
    subprocess.run(
        [str(prefix / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", "--no-index",
         "--find-links", str(wheels), *reqs, str(barehub_wheel)],
        check=True,
    )


def make_env(prefix: Path, wheels: Path, *, singleuser: bool = True) -> Path:
    """A venv from /usr/bin/python3 at prefix, installed offline from the wheelhouse.

    pip installs it once per test session (40 s or more); every later env is a
    copy of that one with its own path written into bin/ and pyvenv.cfg, the way
    conda relocates a prefix.
    """
    key = (wheels.resolve(), singleuser)
    template = _ENV_TEMPLATES.get(key)
    if template is None:
        holder = Path(tempfile.mkdtemp(prefix="barehub-env-template-", dir="/var/tmp"))
        atexit.register(shutil.rmtree, holder, ignore_errors=True)
        template = holder / "env"
        _build_env(template, wheels, singleuser)
        _ENV_TEMPLATES[key] = template
    prefix.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(template), str(prefix)], check=True)
    old, new = str(template).encode(), str(prefix).encode()
    for f in [prefix / "pyvenv.cfg", *(prefix / "bin").iterdir()]:
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            if old in data and b"\0" not in data[:1024]:
                f.write_bytes(data.replace(old, new))
    return prefix


def install_base(base: Path, wheels: Path, extra_settings: str = "", proxy_settings: str = "",
                 ) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """Install a base the way an admin's installer run would, without starting anything.

    The env is reproduced from the lock at BASE/envs/<version>, barehub.toml gets
    free loopback ports first (as a site's config management would write it; plus
    proxy_settings, more lines of its [proxy] table, and extra_settings, more
    TOML sections), then
    post_install.sh runs under constructor's contract with BAREHUB_NO_START=1.
    Returns (prefix, the proxy's URL, the hook's result).
    """
    from helpers import constructor_env, free_ports, run_post_install, version

    v = version()
    prefix = make_env(base / "envs" / v, wheels)
    http_port, api_port, hub_port = free_ports(3)
    (base / "barehub.toml").write_text(
        f"[proxy]\nhttp_port = {http_port}\napi_port = {api_port}\n{proxy_settings}\n[hub]\nport = {hub_port}\n"
        + (f"\n{extra_settings}" if extra_settings else "")
    )
    result = run_post_install(prefix, constructor_env(prefix, v, extra={"BAREHUB_NO_START": "1"}))
    assert result.returncode == 0, result.stdout + result.stderr
    return prefix, f"http://127.0.0.1:{http_port}", result


def pytest_terminal_summary(terminalreporter):
    from helpers import MEASUREMENTS

    if MEASUREMENTS:
        terminalreporter.section("barehub measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
