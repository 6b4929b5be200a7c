"""Small helpers shared by the tests: units, ports, waiting, processes."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def version() -> str:
    ns: dict[str, str] = {}
    exec((REPO / "src/barehub/__init__.py").read_text(), ns)
    return ns["__version__"]


def parse_unit(path: Path) -> dict[str, list[str]]:
    """Key -> list of values of a systemd unit file (all sections merged)."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_command(path: Path) -> tuple[list[str], dict[str, str], str | None, str | None]:
    """(argv of ExecStart, Environment=, WorkingDirectory=, User=) as systemd would run them."""
    unit = parse_unit(path)
    (exec_start,) = unit["ExecStart"]
    env = {}
    for assignment in unit.get("Environment", []):
        for item in shlex.split(assignment):
            k, _, v = item.partition("=")
            env[k] = v
    wd = unit.get("WorkingDirectory", [None])[0]
    user = unit.get("User", [None])[0]
    return shlex.split(exec_start), env, wd, user


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class Proc:
    """A child process in its own session, stopped (and its group killed) on exit."""

    def __init__(self, argv, *, env=None, cwd=None, log: Path, name: str):
        self.name = name
        self.log = log
        self._logf = open(log, "ab")
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 30, group: bool = False) -> int | None:
        """SIGTERM the process (only it, like KillMode=process), then SIGKILL after timeout."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if group:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._logf.close()
        return self.p.returncode

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def constructor_env(prefix: Path, version: str, *, installer_path: str = "", force: bool = False,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment constructor 3.16's .sh installer gives post_install (batch mode).

    It unsets LD_LIBRARY_PATH, LD_PRELOAD, LD_AUDIT and CONDARC, gives back the caller's TMP
    (empty when it had none) with a copy in TMP_BACKUP, and sets these variables.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in {"LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT", "CONDARC", "MAMBARC"}}
    env["TMP"] = env["TMP_BACKUP"] = os.environ.get("TMP", "")
    env = {k: v for k, v in env.items() if not k.startswith("BAREHUB_")}
    env.update(
        PREFIX=str(prefix),
        INSTALLER_NAME="barehub",
        INSTALLER_VER=version,
        INSTALLER_PLAT="linux-64",
        INSTALLER_TYPE="SH",
        INSTALLER_PATH=installer_path or f"/tmp/barehub-{version}-Linux-x86_64.sh",
        INSTALLER_UNATTENDED="1",
        FORCE="1" if force else "0",
    )
    env.update(extra or {})
    return env


def run_post_install(prefix: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run post_install.sh as constructor 3.16 does: executed directly (it has a
    shebang; the script sets `-eu` itself), cwd $PREFIX."""
    script = REPO / "post_install" / "post_install.sh"
    return subprocess.run([str(script)], cwd=prefix, env=env,
                          capture_output=True, text=True, timeout=300)


def http(url: str, token: str | None = None, method: str = "GET", data=None, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of one request; data is bytes, or a dict or list sent as JSON."""
    import json
    import urllib.error
    import urllib.request

    if data is not None and not isinstance(data, bytes):
        data = json.dumps(data).encode()
    req = urllib.request.Request(url, method=method, data=data)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def enable_example(text: str) -> str:
    """What a flavor's example tells the admin: remove '#' where it is directly followed by
    code (sshd_config style); '# ' lines are explanations."""
    import re

    return re.sub(r"^#(?=[^\s#])", "", text, flags=re.M)


def example_layout(tmp_path: Path, settings_text: str):
    """A base with barehub.toml and secrets: enough for hubconfig.base_config."""
    from barehub import render
    from barehub.layout import Layout

    lay = Layout.at(tmp_path / "base")
    lay.config_d.mkdir(parents=True)
    lay.state.mkdir()
    render.write_atomic(lay.settings_file, settings_text)
    render.ensure_secret(lay.proxy_api_password)
    render.ensure_secret(lay.cookie_secret)
    return lay


#: Measurements the tests report; printed together at the end of the run.
MEASUREMENTS: list[str] = []


def report(line: str) -> None:
    """Print a measurement now (with -s) and again in the run's summary."""
    print(line)
    MEASUREMENTS.append(line)


@contextlib.contextmanager
def local_user(name: str):
    """A local login user for the test (created if missing, removed afterwards with its processes)."""
    import pwd

    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        created = True
    try:
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        if created:
            subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@contextlib.contextmanager
def slurm_sudoers(hub_user: str, group: str):
    """The Slurm example's sudoers rule (flavors/slurm/40-slurm.py.example), for hub_user and the
    members of group, installed in /etc/sudoers.d as docs/slurm.md says (checked with visudo),
    and removed afterwards."""
    import re

    text = (REPO / "flavors" / "slurm" / "40-slurm.py.example").read_text()
    block = re.search(r"^# BEGIN sudoers\n(.*?)^# END sudoers$", text, re.S | re.M)
    assert block, "no '# BEGIN sudoers' ... '# END sudoers' block in the Slurm example"
    rule = "\n".join(re.sub(r"^#\s*", "", line) for line in block[1].splitlines()) + "\n"
    rule = rule.replace("%jupyterhub-users", f"%{group}").replace("\njupyterhub ALL", f"\n{hub_user} ALL")
    assert f"%{group}" in rule and f"{hub_user} ALL" in rule, rule
    path = Path("/etc/sudoers.d") / f"zz-barehub-test-{hub_user}"  # no "." in the name: sudo would skip it
    tmp = path.with_name(path.name + "~")  # sudo ignores names ending in ~
    tmp.write_text(rule)
    tmp.chmod(0o440)
    try:
        check = subprocess.run(["visudo", "-c", "-f", str(tmp)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        os.replace(tmp, path)
        yield path
    finally:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
