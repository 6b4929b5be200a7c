"""A two-"host" Slurm cluster from network namespaces, for tests/test_slurm.py.

    head (netns HEAD): munged, slurmctld; the test starts the hub and traefik there
    compute (netns COMPUTE): munged, slurmd
    a veth pair joins them: HEAD_IP <-> COMPUTE_IP

Each host also gets its own UTS namespace (its hostname), and, through
`ip netns exec`, its own /etc/hosts and /etc/slurm (bind-mounted from
/etc/netns/NAME/), so Slurm's commands work there with no SLURM_CONF, as on a
real head node. Everything is removed on exit, also after a failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import Proc, wait_for

HEAD, COMPUTE = "bhslurm-head", "bhslurm-cn1"          # netns names = host names
HEAD_IP, COMPUTE_IP = "10.231.7.1", "10.231.7.2"
VETH_HEAD, VETH_COMPUTE = "bhslurm-h0", "bhslurm-c0"
PARTITION = "interactive"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sudo", "unshare")
CLONE_NEWNET = 0x40000000


def missing_tools() -> list[str]:
    return [d for d in DAEMONS if not (shutil.which(d) or Path("/usr/sbin", d).exists())]


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


# `ip netns exec` mounts a fresh /sys, without the host's cgroup hierarchies, which
# slurmd insists on finding. Jobs are tracked without cgroups (proctrack/linuxproc):
# a v1-style tmpfs with the freezer and systemd hierarchies satisfies its checks.
CGROUPS = ("mountpoint -q /sys/fs/cgroup || { mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup && "
           "mkdir /sys/fs/cgroup/freezer /sys/fs/cgroup/systemd && "
           "mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer && "
           "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; } && ")


def on(host: str, argv: list[str], *, cgroups: bool = False) -> list[str]:
    """argv run on a host: in its netns, with its /etc/netns files, under its hostname."""
    script = (CGROUPS if cgroups else "") + 'hostname "$0" && exec "$@"'
    return ["ip", "netns", "exec", host, "unshare", "--uts", "--", "sh", "-c", script, host, *argv]


class Cluster:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.procs: dict[str, Proc] = {}
        self.stack = contextlib.ExitStack()
        self._pool: ThreadPoolExecutor | None = None

    # --- the two hosts ---------------------------------------------------------

    def _netns(self):
        for ns in (HEAD, COMPUTE):
            if Path("/run/netns", ns).exists():  # a leftover of an interrupted run of this test
                self._remove_netns(ns)
            sh("ip", "netns", "add", ns)
            self.stack.callback(self._remove_netns, ns)
        sh("ip", "link", "add", VETH_HEAD, "netns", HEAD, "type", "veth", "peer", "name", VETH_COMPUTE,
           "netns", COMPUTE)
        for ns, dev, ip in ((HEAD, VETH_HEAD, HEAD_IP), (COMPUTE, VETH_COMPUTE, COMPUTE_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")

    def _remove_netns(self, ns: str):
        # whatever still runs in it was started by this cluster (jobs, slurmstepd)
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()  # only if nobody else uses it

    def _etc(self, slurm_conf: dict[str, str]):
        hosts = f"127.0.0.1 localhost\n{HEAD_IP} {HEAD}\n{COMPUTE_IP} {COMPUTE}\n"
        for ns in (HEAD, COMPUTE):
            etc = Path("/etc/netns") / ns
            (etc / "slurm").mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)
            (etc / "slurm" / "slurm.conf").write_text(slurm_conf[ns])

    def _slurm_conf(self, ns: str) -> str:
        d = self.dir
        node = sh("slurmd", "-C").stdout.splitlines()[0].split(" ", 1)[1]  # CPUs=... RealMemory=...
        return "\n".join([
            "ClusterName=barehubtest",
            f"SlurmctldHost={HEAD}({HEAD_IP})",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={d}/munge-{ns}/munge.sock",
            f"StateSaveLocation={d}/ctld", f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "MpiDefault=none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "ReturnToService=2", "KillWait=5", "MinJobAge=30",
            f"NodeName={COMPUTE} NodeAddr={COMPUTE_IP} {node} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={COMPUTE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    # --- daemons -----------------------------------------------------------------

    def _start(self, name: str, host: str, argv: list[str], **kw):
        self.procs[name] = Proc(on(host, argv, **kw), log=self.dir / f"{name}.out", name=name)

    def _munge(self, key: Path):
        for ns in (HEAD, COMPUTE):
            run = self.dir / f"munge-{ns}"
            run.mkdir(mode=0o755)
            self._start(f"munged-{ns}", ns, [
                "munged", "-F", f"--key-file={key}", f"--socket={run}/munge.sock",
                f"--pid-file={run}/munged.pid", f"--log-file={run}/munged.log", f"--seed-file={run}/seed"])
        for ns in (HEAD, COMPUTE):
            wait_for(lambda: (self.dir / f"munge-{ns}/munge.sock").exists(), 15, what=f"munged on {ns}")

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        for sub in ("ctld", "spool"):
            (self.dir / sub).mkdir()
        key = self.dir / "munge.key"
        sh("mungekey", "-c", "-k", str(key), "-b", "1024")
        key.chmod(0o600)
        self._netns()
        self.stack.callback(self._stop_daemons)  # runs before the namespaces go (LIFO)
        self._etc({ns: self._slurm_conf(ns) for ns in (HEAD, COMPUTE)})
        self._munge(key)
        self._start("slurmctld", HEAD, ["slurmctld", "-D", "-c", "-i"])
        wait_for(lambda: "UP" in self.run(HEAD, "scontrol", "ping").stdout, 30, what="slurmctld")
        self._start("slurmd", COMPUTE, ["slurmd", "-D"], cgroups=True)
        try:
            wait_for(lambda: self.run(HEAD, "sinfo", "-h", "-o", "%T").stdout.strip() == "idle", 30,
                     what="compute node idle in sinfo")
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n--- slurmd:\n{self.procs['slurmd'].tail()}") from None
        return self

    def _stop_daemons(self):
        if "slurmctld" in self.procs and self.procs["slurmctld"].alive():
            self.run(HEAD, "scancel", "--full", "--partition", PARTITION, check=False)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not self.run(HEAD, "squeue", "-h").stdout.strip(), 20, what="jobs gone")
        for name in ("slurmd", "slurmctld", f"munged-{COMPUTE}", f"munged-{HEAD}"):
            if name in self.procs:
                self.procs[name].stop(15)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self):
        self.stack.close()

    # --- using it -----------------------------------------------------------------

    def run(self, host: str, *argv: str, check: bool = True, timeout: float = 30):
        return subprocess.run(on(host, list(argv)), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def squeue(self, *fields: str) -> list[list[str]]:
        """squeue on the head node: one list of fields per job (%i id, %T state, %B batch host...)."""
        out = self.run(HEAD, "squeue", "-h", "-o", "|".join(fields)).stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def netns_inode(self, host: str) -> int:
        return os.stat(f"/run/netns/{host}").st_ino

    def on_head(self, fn, *args, **kwargs):
        """fn(*args) in a thread whose network namespace is the head node's (HTTP to traefik)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=3, initializer=_enter_netns, initargs=(HEAD,),
                                            thread_name_prefix="head-netns")
        return self._pool.submit(fn, *args, **kwargs)


_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(name: str):
    """Move the calling thread (only it) into a network namespace."""
    with open(f"/run/netns/{name}") as f:
        if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
