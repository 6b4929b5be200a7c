"""Real systemd for tests: a Debian bookworm container booted with systemd-nspawn.

The host's PID 1 need not be systemd (no machined, no system bus), so containers
are started bare: `systemd-nspawn -b --register=no --keep-unit`, inside cgroup
directories of their own (nothing leaks into the root cgroup, two containers never
collide), with a cgroup2 tree for the container (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
and bpf() allowed, so IPAddressDeny= and DevicePolicy= are enforced inside).

    tarball = build_rootfs()                   # debootstrap once (~2 min), then cached
    with Container("demo", tarball) as c:      # unpack + boot; destroyed on exit
        print(c.exec("systemctl is-system-running").stdout)

Every container an autoclean Container boots is stopped and deleted at the latest
when the Python process exits (atexit; SIGTERM is turned into KeyboardInterrupt),
and reap_stale() deletes those of processes that died without cleaning up (kill -9).
Bookkeeping lives in /run/barehub-ct/NAME, rootfs dirs in /var/tmp/barehub-ct/NAME,
so scripts/ct can drive the same containers from separate invocations.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

SUITE = "bookworm"
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates",
                 "procps", "iproute2", "sudo", "curl", "less",
                 "strace")  # scripts/ci/no-network watches the offline install with it
# Bump when _tweak_rootfs changes: it is part of the cache file's hash.
RECIPE = 2
MASKED_UNITS = ("console-getty.service", "container-getty@.service", "getty@.service",
                "serial-getty@.service", "getty-static.service", "apt-daily.timer",
                "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
                "e2scrub_reap.service", "fstrim.timer")

CACHE_DIR = Path(os.environ.get("BAREHUB_CT_CACHE", "/var/cache/barehub-tests"))
WORK_DIR = Path(os.environ.get("BAREHUB_CT_WORKDIR", "/var/tmp/barehub-ct"))
STATE_DIR = Path("/run/barehub-ct")
INNER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
             "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8", "TERM": "dumb", "SYSTEMD_PAGER": ""}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class ContainerError(RuntimeError):
    pass


class ExecError(subprocess.CalledProcessError):
    """A command inside a container failed; str() shows its output."""

    def __init__(self, container: str, returncode, cmd, output, stderr):
        super().__init__(returncode, cmd, output, stderr)
        self.container = container

    def __str__(self):
        def tail(s):
            return (s or "")[-3000:].rstrip() or "(empty)"
        return (f"{super().__str__()} (in container {self.container})\n"
                f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}")


def log(msg: str) -> None:
    print(f"barehub-ct: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- rootfs

def cache_path(cache: Path | None = None, extra_packages: Iterable[str] = ()) -> Path:
    """The tarball for this package list: rootfs-bookworm.tar.zst -> rootfs-bookworm-1a2b3c4d.tar.zst."""
    cache = Path(cache) if cache else CACHE_DIR / f"rootfs-{SUITE}.tar.zst"
    packages = sorted(set(BASE_PACKAGES) | set(extra_packages))
    digest = hashlib.sha256(f"{SUITE} {RECIPE} {','.join(packages)}".encode()).hexdigest()[:8]
    stem = cache.name.removesuffix(".tar.zst")
    return cache.with_name(f"{stem}-{digest}.tar.zst")


def build_rootfs(cache: Path | None = None, extra_packages: Iterable[str] = (), *,
                 mirror: str | None = os.environ.get("BAREHUB_CT_MIRROR"),
                 progress: Callable[[str], None] = log) -> Path:
    """Path of a cached bookworm rootfs tarball; debootstraps it (~2 min) if missing.

    Concurrent callers wait on a file lock; the tarball appears atomically (tmp + rename).
    """
    extra_packages = tuple(extra_packages)
    tarball = cache_path(cache, extra_packages)
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.with_name(tarball.name.removesuffix(".tar.zst") + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build of {tarball.name}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        start = time.monotonic()
        build = tarball.parent / f".build-{tarball.name.removesuffix('.tar.zst')}-{os.getpid()}"
        tmp = build.with_name(build.name + ".tar.zst")
        try:
            _remove_tree(build)
            packages = sorted(set(BASE_PACKAGES) | set(extra_packages))
            _debootstrap(build, packages, mirror, progress, start)
            _tweak_rootfs(build)
            progress(f"[{time.monotonic() - start:.0f}s] packing {tarball}")
            subprocess.run(["tar", "-C", str(build), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                            "--acls", "-I", "zstd -T0 -3 -q", "-cpf", str(tmp), "."], check=True)
            os.rename(tmp, tarball)
        finally:
            _remove_tree(build)
            tmp.unlink(missing_ok=True)
        progress(f"[{time.monotonic() - start:.0f}s] rootfs cached: {tarball} "
                 f"({tarball.stat().st_size >> 20} MB)")
        return tarball


def _debootstrap(root: Path, packages: Sequence[str], mirror, progress, start) -> None:
    logfile = root.with_name(root.name + ".log")
    progress(f"debootstrap {SUITE} minbase into {root} (~2 min the first time; log {logfile})")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(root)]
    with open(logfile, "w") as logf:
        p = subprocess.Popen(cmd + ([mirror] if mirror else []), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        seen = set()
        for line in p.stdout:
            logf.write(line)
            m = re.match(r"I: (\w+)", line)
            if m and m.group(1) not in seen:    # one line per phase, not one per package
                seen.add(m.group(1))
                progress(f"[{time.monotonic() - start:.0f}s] {line.strip()}")
    if p.wait():
        tail = "".join(logfile.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise ContainerError(f"debootstrap failed (rc {p.returncode}), see {logfile}:\n{tail}")
    logfile.unlink()


def _tweak_rootfs(root: Path) -> None:
    """A quiet, quick-booting test machine (per-container bits are written at unpack)."""
    etc = root / "etc"
    (etc / "systemd/system/default.target").unlink(missing_ok=True)
    (etc / "systemd/system/default.target").symlink_to("/lib/systemd/system/multi-user.target")
    for unit in MASKED_UNITS:
        link = etc / "systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # no docs, man pages, translations: a third fewer files, so unpacking is faster
    nodoc = ("/usr/share/doc", "/usr/share/man", "/usr/share/locale", "/usr/share/info")
    (etc / "dpkg/dpkg.cfg.d/01-barehub-tests-nodoc").write_text("".join(f"path-exclude={d}/*\n" for d in nodoc))
    for d in nodoc:
        _remove_tree(root / d.lstrip("/"))
        (root / d.lstrip("/")).mkdir()
    (etc / "machine-id").write_text("")       # each container gets its own at unpack
    (etc / "resolv.conf").unlink(missing_ok=True)   # debootstrap copied the build host's
    for junk in [*(root / "var/cache/apt").glob("*.bin"), *(root / "var/cache/apt/archives").glob("*.deb"),
                 *(root / "var/lib/apt/lists").glob("*_*")]:
        junk.unlink()


# --------------------------------------------------------------------------- processes, cgroups, mounts

def _stat(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(")") + 2:].split()      # [state, ppid, ...] (comm may hold spaces)


def _alive(pid: int | None) -> bool:
    st = _stat(pid) if pid else None
    return st is not None and st[0] not in ("Z", "X")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st and int(st[1]) == pid:
                out.append(int(d.name))
    return out


def _kill_tree(pid: int) -> None:
    for child in _children(pid):
        _kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cgroup_roots() -> list[Path]:
    fs = Path("/sys/fs/cgroup")
    if (fs / "cgroup.controllers").exists():          # pure cgroup2 host
        return [fs]
    return [fs / h for h in ("systemd", "unified") if (fs / h / "cgroup.procs").exists()]


def _cgroup_pids(top: Path) -> set[int]:
    pids = set()
    for d, _, _ in os.walk(top):
        try:
            pids |= {int(p) for p in (Path(d) / "cgroup.procs").read_text().split()}
        except (FileNotFoundError, OSError):
            pass
    return pids


def _remove_cgroup(top: Path, timeout: float = 10) -> None:
    """Kill whatever still runs in cgroup dir `top` (and below), then remove the dirs."""
    deadline = time.monotonic() + timeout
    while top.exists():
        pids = _cgroup_pids(top)
        if (top / "cgroup.kill").exists() and pids:
            (top / "cgroup.kill").write_text("1")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for d, _, _ in os.walk(top, topdown=False):
            try:
                os.rmdir(d)
            except OSError:
                pass
        if top.exists():
            if time.monotonic() > deadline:
                raise ContainerError(f"cannot remove cgroup {top}: pids {sorted(_cgroup_pids(top))}")
            time.sleep(0.05)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [m for m in mounts if (m + "/").startswith(prefix)]


def _remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount point (a half-done debootstrap leaves proc/sys mounted)."""
    if not path.exists():
        return
    for m in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    if _mounts_under(path):
        raise ContainerError(f"refusing to delete {path}: still has mounts {_mounts_under(path)}")
    shutil.rmtree(path)


def _join_cgroups(procs_files: list[str]) -> None:   # runs in the child, before exec
    for f in procs_files:
        with open(f, "w") as fh:
            fh.write(str(os.getpid()))


# --------------------------------------------------------------------------- containers

_LIVE: set[Container] = set()


def _cleanup_all() -> None:
    for c in list(_LIVE):
        try:
            c.destroy(timeout=15)
        except Exception as e:   # noqa: BLE001 - keep cleaning up the others
            log(f"cleanup of {c.name} failed: {e}")


atexit.register(_cleanup_all)


def _sigterm_to_interrupt() -> None:
    """SIGTERM would skip atexit; make it a KeyboardInterrupt so containers get cleaned up."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def handler(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        signal.signal(signal.SIGTERM, handler)


class Container:
    """One systemd-nspawn container with a persistent rootfs (survives reboot())."""

    def __init__(self, name: str, tarball: Path | None = None, *, private_network: bool = True,
                 binds: Sequence[str] = (), binds_ro: Sequence[str] = (), nspawn_args: Sequence[str] = (),
                 unified_cgroup: bool = True, allow_degraded: bool = False, autoclean: bool = True,
                 workdir: Path | None = None):
        """binds/binds_ro: systemd-nspawn --bind=/--bind-ro= values ("SRC[:DST]").

        autoclean: destroy at interpreter exit (tests); scripts/ct uses False.
        """
        if not NAME_RE.match(name):
            raise ValueError(f"bad container name {name!r}: [a-z0-9-], at most 40 chars")
        self.name = name
        self.tarball = tarball
        self.private_network = private_network
        self.binds, self.binds_ro, self.nspawn_args = list(binds), list(binds_ro), list(nspawn_args)
        self.unified_cgroup = unified_cgroup
        self.allow_degraded = allow_degraded
        self.autoclean = autoclean
        self.dir = Path(workdir or WORK_DIR) / name
        self.rootfs = self.dir / "rootfs"
        self.console_log = self.dir / "console.log"
        self.state = STATE_DIR / name
        self.cgroup_dirs = [root / f"barehub-ct-{name}" for root in _cgroup_roots()]
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen | None = None

    def __repr__(self):
        return f"<Container {self.name} {'running' if self.running else 'stopped'}>"

    @classmethod
    def attach(cls, name: str, **kwargs) -> Container:
        """The container NAME as another process (or scripts/ct) left it in /run/barehub-ct/NAME."""
        state = STATE_DIR / name
        workdir = (state / "workdir").read_text().strip() if (state / "workdir").exists() else None
        return cls(name, workdir=Path(workdir).parent if workdir else None, autoclean=False, **kwargs)

    # ------------------------------------------------------------- pids
    def _read_pid(self, what: str) -> int | None:
        try:
            return int((self.state / f"{what}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def nspawn_pid(self) -> int | None:
        """Host pid of systemd-nspawn, or None when it is not running."""
        if self._proc is not None:
            self._proc.poll()       # reap it if it exited
        pid = self._read_pid("nspawn")
        return pid if _alive(pid) and _comm(pid) == "systemd-nspawn" else None

    def _leader_or_none(self) -> int | None:
        pid = self._read_pid("leader")
        if pid and _alive(pid) and _comm(pid) == "systemd" and \
                os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid"):
            return pid
        return None

    @property
    def leader_pid(self) -> int:
        """Host pid of the container's PID 1 (systemd)."""
        pid = self._leader_or_none()
        if pid is None:
            raise ContainerError(f"container {self.name} is not running")
        return pid

    @property
    def running(self) -> bool:
        return self._leader_or_none() is not None

    # ------------------------------------------------------------- lifecycle
    def unpack(self) -> None:
        """A fresh rootfs from the tarball, with this container's hostname and machine-id."""
        if self.tarball is None:
            raise ContainerError(f"container {self.name} has no rootfs and no tarball to unpack")
        start = time.monotonic()
        _remove_tree(self.rootfs)
        self.rootfs.mkdir(parents=True)
        subprocess.run(["tar", "-C", str(self.rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                        "--acls", "-I", "zstd", "-xpf", str(self.tarball)], check=True)
        etc = self.rootfs / "etc"
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n"
                                   "::1 localhost ip6-localhost ip6-loopback\n")
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        self.timings["unpack"] = time.monotonic() - start

    def boot(self, timeout: float = 120, allow_degraded: bool | None = None) -> Container:
        """Start systemd-nspawn in the background; return once systemd reports running."""
        if self.nspawn_pid or self.running:
            raise ContainerError(f"container {self.name} is already running")
        if self.autoclean:           # from here on, whatever happens, it gets cleaned up
            _LIVE.add(self)
            _sigterm_to_interrupt()
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "owner").write_text(f"{os.getpid()}\n")     # for reap_stale()
        if not (self.rootfs / "usr").is_dir():
            self.unpack()
        start = time.monotonic()
        for d in self.cgroup_dirs:
            _remove_cgroup(d)        # leftovers of a crashed run would mix with ours
            d.mkdir()
        _remove_tree(self.state)
        self.state.mkdir(parents=True)
        (self.state / "workdir").write_text(f"{self.dir}\n")
        args = ["systemd-nspawn", "--boot", f"--directory={self.rootfs}", f"--machine={self.name}",
                "--register=no", "--keep-unit",        # no machined / system bus on the host
                "--console=read-only", "--link-journal=no"]
        env = dict(os.environ)
        if self.unified_cgroup:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
            args.append("--system-call-filter=bpf")
        args.append("--private-network" if self.private_network else "--resolv-conf=replace-host")
        args += [f"--bind={b}" for b in self.binds] + [f"--bind-ro={b}" for b in self.binds_ro]
        args += self.nspawn_args
        procs_files = [str(d / "cgroup.procs") for d in self.cgroup_dirs]
        with open(self.console_log, "ab") as console:
            console.write(f"\n===== {time.strftime('%F %T')} {' '.join(args)}\n".encode())
            console.flush()
            self._proc = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _join_cgroups(procs_files))
        (self.state / "nspawn.pid").write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(timeout, self.allow_degraded if allow_degraded is None else allow_degraded)
        except ContainerError:
            if not self.running:     # half-started: leave nothing behind
                self.stop(timeout=10)
            raise
        self.timings["boot"] = time.monotonic() - start
        return self

    def _wait_ready(self, timeout: float, allow_degraded: bool) -> None:
        deadline = time.monotonic() + timeout

        def check(what):
            if self._proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn for {self.name} exited with {self._proc.returncode}; "
                                     f"console log {self.console_log}:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise ContainerError(f"container {self.name}: timeout ({timeout}s) waiting for {what}:\n"
                                     f"{self.console_tail()}")
            time.sleep(0.05)

        leader = None
        while leader is None:
            leader = next((c for c in _children(self._proc.pid) if _comm(c) == "systemd"), None)
            if leader is None:
                check("the container's systemd")
        (self.state / "leader.pid").write_text(f"{leader}\n")
        while not Path(f"/proc/{leader}/root/run/systemd/private").exists():
            check("systemd's private socket")
        try:
            r = self.exec(["systemctl", "is-system-running", "--wait"], check=False,
                          timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            jobs = self.exec(["systemctl", "list-jobs", "--no-legend"], check=False).stdout
            raise ContainerError(f"container {self.name}: still starting after {timeout}s; jobs:\n{jobs}") from None
        state = r.stdout.strip()
        # systemd before 240 (Rocky 8: 239) has no `is-system-running --wait`: it answers at once
        while state in ("initializing", "starting") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = self.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
        if state == "running":
            return
        if state == "degraded":
            failed = self.exec(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
            log(f"container {self.name} is degraded; failed units:\n{failed}")
            if allow_degraded:
                return
        raise ContainerError(f"container {self.name} not ready: {state!r} {r.stderr.strip()}")

    def stop(self, timeout: float = 60) -> None:
        """Clean poweroff (SIGRTMIN+3 to systemd), SIGKILL after timeout; removes its cgroups."""
        start = time.monotonic()
        nspawn, leader = self.nspawn_pid, self._leader_or_none()
        if leader:
            os.kill(leader, signal.SIGRTMIN + 3)     # what `systemctl poweroff` does
        elif nspawn:
            os.kill(nspawn, signal.SIGTERM)          # nspawn forwards it as SIGRTMIN+3
        deadline = time.monotonic() + timeout
        while (self.nspawn_pid or _alive(leader)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.nspawn_pid or _alive(leader):
            log(f"container {self.name}: no clean shutdown within {timeout}s, killing it")
            for pid in (leader, self.nspawn_pid):   # killing PID 1 kills its whole pid namespace
                if pid and _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.nspawn_pid or _alive(leader):
                if time.monotonic() > deadline:
                    raise ContainerError(f"container {self.name}: pids {nspawn} {leader} survive SIGKILL")
                time.sleep(0.05)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        for d in self.cgroup_dirs:
            _remove_cgroup(d)
        _remove_tree(self.state)
        _LIVE.discard(self)
        if nspawn or leader:
            self.timings["stop"] = time.monotonic() - start

    def reboot(self, timeout: float = 120) -> Container:
        """Power off and boot again on the same rootfs (state on disk survives)."""
        self.stop()
        return self.boot(timeout)

    def destroy(self, timeout: float = 60) -> None:
        """stop() and delete the rootfs."""
        self.stop(timeout)
        _remove_tree(self.dir)

    def __enter__(self) -> Container:
        if not self.running:
            try:
                self.boot()
            except BaseException:
                self.destroy()
                raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------- running things inside
    def nsenter_cmd(self, argv: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        """Host argv that runs argv inside the container (all namespaces, clean env, cwd /)."""
        assignments = [f"{k}={v}" for k, v in {**INNER_ENV, **(env or {})}.items()]
        return ["nsenter", "-t", str(self.leader_pid), "-a", "--wdns=/", "env", "-i", *assignments, *argv]

    def exec(self, cmd: str | Sequence[str], *, check: bool = True, input: str | None = None,
             timeout: float | None = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run cmd (argv, or a string for /bin/sh -c) as root inside; stdout/stderr captured as text."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        p = subprocess.Popen(self.nsenter_cmd(argv, env), text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except BaseException:        # timeout or Ctrl-C: nsenter forks, kill what it started too
            _kill_tree(p.pid)
            out, err = p.communicate()
            if sys.exc_info()[0] is subprocess.TimeoutExpired:
                raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
            raise
        if check and p.returncode:
            raise ExecError(self.name, p.returncode, argv, out, err)
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def run_service(self, cmd: str | Sequence[str], *, unit: str | None = None, wait: bool = True,
                    properties: Sequence[str] = (), env: dict[str, str] | None = None, **kwargs):
        """Run cmd as a transient service (systemd-run): real service context, journal, cgroup.

        wait=True pipes its stdio back and waits (returns its exit code); wait=False starts it in the
        background (give it a unit= name to stop it later). kwargs go to exec().
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        run = ["systemd-run", "--quiet", "--collect"] + (["--wait", "--pipe"] if wait else [])
        run += [f"--unit={unit}"] if unit else []
        run += [f"--property={p}" for p in properties]
        run += [f"--setenv={k}={v}" for k, v in (env or {}).items()]
        return self.exec(run + ["--", *argv], **kwargs)

    def push(self, host_path: str | Path, container_dir: str, timeout: float = 300) -> None:
        """Copy a host file or directory into container_dir (created if missing), owned by root."""
        src = Path(host_path).resolve()
        if not src.exists():
            raise FileNotFoundError(src)
        tar = subprocess.Popen(["tar", "-C", str(src.parent), "-cf", "-", src.name], stdout=subprocess.PIPE)
        untar = ["/bin/sh", "-c", 'mkdir -p "$1" && exec tar --no-same-owner -C "$1" -xf -', "sh", container_dir]
        r = subprocess.run(self.nsenter_cmd(untar), stdin=tar.stdout, capture_output=True, text=True,
                           timeout=timeout)
        tar.stdout.close()
        if tar.wait() or r.returncode:
            raise ExecError(self.name, r.returncode or tar.returncode, ["push", str(src), container_dir],
                            r.stdout, r.stderr)

    def read_file(self, path: str) -> str:
        return self.exec(["cat", "--", path]).stdout

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        self.exec(["/bin/sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', "sh",
                   path, f"{mode:o}"], input=text)

    def host_netns_cmd(self, argv: Sequence[str]) -> list[str]:
        """Host argv that runs a HOST program (venv python, curl...) in the container's network only."""
        return ["nsenter", "-t", str(self.leader_pid), "-n", "--", *argv]


def reap_stale(workdir: Path = WORK_DIR, progress: Callable[[str], None] = log) -> None:
    """Destroy autoclean containers whose owning process died without cleaning up (kill -9, crash)."""
    if not workdir.is_dir():
        return
    for d in workdir.iterdir():
        try:
            owner = int((d / "owner").read_text())
        except (FileNotFoundError, ValueError):
            continue
        if not _alive(owner):
            progress(f"removing stale container {d.name} of dead pid {owner}")
            Container(d.name, workdir=workdir, autoclean=False).destroy(timeout=10)
