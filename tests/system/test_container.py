"""Self-test of the systemd-nspawn harness (tests/container.py)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from container import ExecError
from helpers import free_ports, wait_for


def _procs_in_pidns(pidns: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.readlink(d / "ns/pid") == pidns:
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def test_container_lifecycle(container_factory, tmp_path):
    c = container_factory("selftest")
    print(f"{c.name}: {c.timings}")

    # a real systemd as PID 1, fully up
    assert c.exec(["cat", "/proc/1/comm"]).stdout == "systemd\n"
    assert c.exec("systemctl is-system-running").stdout == "running\n"
    assert c.exec("hostname").stdout == f"{c.name}\n"

    # exec: exit codes, stdout/stderr, stdin, env, errors, timeouts
    r = c.exec("echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(ExecError, match="boom"):
        c.exec("echo boom >&2; exit 1")
    assert c.exec(["cat"], input="via stdin\n").stdout == "via stdin\n"
    assert c.exec("echo $FOO $HOME", env={"FOO": "bar"}).stdout == "bar /root\n"
    with pytest.raises(subprocess.TimeoutExpired):
        c.exec(["sleep", "77"], timeout=1)
    # killed, not left behind (the container's systemd reaps it a moment later)
    wait_for(lambda: c.exec(["pgrep", "-x", "sleep"], check=False).returncode == 1, 5, 0.05, "sleep gone")
    r = c.run_service("echo in-service; test -n \"$INVOCATION_ID\"; exit 4", check=False)
    assert (r.returncode, r.stdout) == (4, "in-service\n")

    # push: a file and a directory tree
    (tmp_path / "tree/sub").mkdir(parents=True)
    (tmp_path / "tree/sub/hello.txt").write_text("hello from the host\n")
    (tmp_path / "single.txt").write_text("single\n")
    c.push(tmp_path / "tree", "/srv/pushed")
    c.push(tmp_path / "single.txt", "/srv/pushed")
    assert c.read_file("/srv/pushed/tree/sub/hello.txt") == "hello from the host\n"
    assert c.read_file("/srv/pushed/single.txt") == "single\n"
    assert c.exec(["stat", "-c", "%U", "/srv/pushed/tree/sub/hello.txt"]).stdout == "root\n"

    # private network: nothing but lo, outside connections fail at once
    links = c.exec(["ip", "-o", "link"]).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    probe = ("import socket, time\nt = time.monotonic()\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=10)\n    print('connected')\n"
             "except OSError as e:\n    print(type(e).__name__, round(time.monotonic() - t, 1))\n")
    out = c.exec(["python3", "-c", probe]).stdout.split()
    assert out[0] != "connected" and float(out[1]) < 1, out

    # a HOST program (curl, the test venv's python) reaches a server inside via the container's netns
    c.run_service(["python3", "-m", "http.server", "8765", "--bind", "127.0.0.1", "--directory", "/srv/pushed"],
                  unit="selftest-http", wait=False)
    curl = c.host_netns_cmd(["curl", "-sf", "http://127.0.0.1:8765/tree/sub/hello.txt"])
    body = wait_for(lambda: subprocess.run(curl, capture_output=True, text=True).stdout, 10, 0.1, "http.server")
    assert body == "hello from the host\n"
    py = c.host_netns_cmd([sys.executable, "-c", "import urllib.request as u; "
                           "print(u.urlopen('http://127.0.0.1:8765/single.txt').read().decode(), end='')"])
    assert subprocess.run(py, capture_output=True, text=True, check=True).stdout == "single\n"

    # reboot: same rootfs, new systemd, files survive
    c.write_file("/var/lib/selftest/marker", "before reboot\n")
    old_leader = c.leader_pid
    c.reboot()
    assert c.leader_pid != old_leader
    assert c.read_file("/var/lib/selftest/marker") == "before reboot\n"
    assert c.exec("systemctl is-system-running").stdout == "running\n"

    # destroy: no process, cgroup, rootfs or state left; not even a stray process started by exec
    c.exec("nohup sleep 1000 >/dev/null 2>&1 &")
    leader, nspawn = c.leader_pid, c.nspawn_pid
    pidns = os.readlink(f"/proc/{leader}/ns/pid")
    assert len(_procs_in_pidns(pidns)) > 3
    c.destroy()
    print(f"{c.name}: {c.timings}")
    assert not Path(f"/proc/{leader}").exists() and not Path(f"/proc/{nspawn}").exists()
    assert _procs_in_pidns(pidns) == []
    assert glob.glob(f"/sys/fs/cgroup/*{c.name}*") + glob.glob(f"/sys/fs/cgroup/*/*{c.name}*") == []
    assert not c.dir.exists() and not c.state.exists()
    with pytest.raises(Exception, match="not running"):
        c.exec("true")


def test_two_containers_at_once(container_factory):
    """Private and host network side by side: own hostnames, cgroups and ports."""
    a = container_factory("selftest-a")
    b = container_factory("selftest-b", private_network=False)
    assert a.exec("hostname").stdout == f"{a.name}\n" and b.exec("hostname").stdout == f"{b.name}\n"
    assert a.exec("cat /etc/machine-id").stdout != b.exec("cat /etc/machine-id").stdout
    assert set(a.cgroup_dirs).isdisjoint(b.cgroup_dirs) and all(d.is_dir() for d in a.cgroup_dirs + b.cgroup_dirs)
    # b shares the host's network: the host's interfaces are there, a has only lo
    host_links = len(subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines())
    assert len(b.exec(["ip", "-o", "link"]).stdout.splitlines()) == host_links
    assert len(a.exec(["ip", "-o", "link"]).stdout.splitlines()) == 1
    # the same port in both is no clash (a's 127.0.0.1 is its own; b's is the host's)
    (port,) = free_ports(1)
    for c in (a, b):
        c.run_service(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "/etc"],
                      unit="selftest-http", wait=False)
    for c in (a, b):
        curl = c.host_netns_cmd(["curl", "-sf", f"http://127.0.0.1:{port}/hostname"])
        assert wait_for(lambda: subprocess.run(curl, capture_output=True, text=True).stdout, 10, 0.1) == f"{c.name}\n"
