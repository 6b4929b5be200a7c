"""Talking to systemd: is it there, link/enable/start the units, and their state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path


def systemctl_path() -> str:
    return shutil.which("systemctl") or "/usr/bin/systemctl"


def is_running(root: Path = Path("/")) -> bool:
    """True when systemd is PID 1 (the check sd_booted() makes)."""
    return (root / "run/systemd/system").is_dir()


class SystemdError(Exception):
    pass


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [systemctl_path(), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise SystemdError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {detail}")
    return proc


def unit_state(unit: str) -> tuple[str, str]:
    """(enabled-state, active-state) of a unit, e.g. ("enabled", "active")."""
    enabled = systemctl("is-enabled", unit, check=False).stdout.strip() or "not-found"
    active = systemctl("is-active", unit, check=False).stdout.strip() or "unknown"
    return enabled, active


def main_pid(unit: str) -> int:
    out = systemctl("show", "--property=MainPID", "--value", unit, check=False).stdout.strip()
    return int(out or 0)


def link_and_enable(unit_files: list[Path]) -> None:
    """Make systemd know the unit files where they are (in the base) and enable them.

    `systemctl link` puts a symlink in /etc/systemd/system; `systemctl disable`
    removes it again, so `disable` plus `rm -rf` of the base leaves nothing behind.
    """
    for path in unit_files:
        current = Path("/etc/systemd/system") / path.name
        if current.is_symlink() and Path(current.readlink()) == path:
            continue
        if current.exists() and not current.is_symlink():
            raise SystemdError(
                f"{current} exists and is not barehub's. Move it away, then run the installer again."
            )
        # --force replaces a stale link (an older base at another path)
        systemctl("link", *(["--force"] if current.is_symlink() else []), str(path))
    systemctl("daemon-reload")
    systemctl("enable", *(p.name for p in unit_files))


def _own_cgroup_procs(proc: Path = Path("/proc")) -> list[int]:
    """The processes of this process's cgroup (its unit's, when systemd runs it)."""
    pids: list[int] = []
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return pids
    for line in lines:
        _hier, controllers, path = line.split(":", 2)
        roots = {"": [Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")],
                 "name=systemd": [Path("/sys/fs/cgroup/systemd")]}.get(controllers, [])
        for root in roots:
            try:
                pids = [int(p) for p in (root / path.lstrip("/") / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
            return pids
    return pids


def stop_managed_services(grace: float = 3.0, proc: Path = Path("/proc")) -> list[int]:
    """Stop what is left of the hub's managed services (the idle culler, say) once the hub is gone.

    Run by jupyterhub.service's ExecStopPost, in the unit's cgroup, as the hub's user.
    With KillMode=process, a hub killed with SIGKILL (or crashing) leaves its managed
    services running, and the next hub would start a second copy of each. They are
    the processes of this cgroup, of this user, that JupyterHub started with
    JUPYTERHUB_SERVICE_NAME in their environment; users' servers never have it (and
    run as their users). Each gets SIGTERM, then SIGKILL after `grace` seconds.
    """
    import time

    me, uid = os.getpid(), os.getuid()
    found = []
    for pid in _own_cgroup_procs(proc):
        if pid == me:
            continue
        try:
            if os.stat(proc / str(pid)).st_uid != uid:
                continue
            environ = (proc / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(b"JUPYTERHUB_SERVICE_NAME=") for e in environ):
            found.append(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in found:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive or sig == signal.SIGKILL:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any((proc / str(p)).exists() for p in alive):
            time.sleep(0.1)
        found = [p for p in alive if (proc / str(p)).exists()]
    return found


def kill_leftovers(unit: str) -> list[int]:
    """SIGKILL processes left in a stopped unit's cgroup (user servers, with KillMode=process)."""
    group = systemctl("show", "--property=ControlGroup", "--value", unit, check=False).stdout.strip()
    killed: list[int] = []
    if not group:
        return killed
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd")):
        procs = root / group.lstrip("/") / "cgroup.procs"
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except (FileNotFoundError, ValueError):
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed
