"""The real jupyterhub of the lock, started the way jupyterhub.service starts it, for
one jupyterhub_config.d file at a time: did it start, and can it spawn?

A `Bench` is an installed base (env from the lock, units rendered by post_install)
with its traefik running from the rendered proxy unit. `outcome(file)` puts the file
into config.d (next to a driver service with a known token), starts the hub from the
unit's ExecStart, and reports how it ended:

- "start": the hub exited before its API answered (it refused the configuration);
- "spawn": the API answered, and starting a server for a user failed;
- "ok": the API answered and the spawn worked (a server that exits at once is fine:
  the spawner started it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import Proc, http, unit_command

DRIVER_TOKEN = secrets.token_hex(16)
DRIVER = (  # what every run has after the file under test (a name that sorts last, appending)
    'c.JupyterHub.services.append({"name": "corpus-driver", "api_token": "%s"})\n'
    'c.JupyterHub.load_roles.append({"name": "corpus-driver", "services": ["corpus-driver"],\n'
    '    "scopes": ["admin:users", "admin:servers"]})\n'
    # answer a spawn request at once (202); the test then waits for the server itself
    'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}\n'
    # unless the file chooses a spawner: one that starts anywhere, as the hub's user,
    # running a stand-in for jupyterhub-singleuser that answers every request
    'if "spawner_class" not in c.JupyterHub:\n'
    '    c.JupyterHub.spawner_class = "simple"\n'
    'if "cmd" not in c.Spawner:\n'
    '    c.Spawner.cmd = %r\n'
)
#: a stand-in single-user server: answers every GET on JUPYTERHUB_SERVICE_URL's port
FAKE_SERVER = """\
import http.server, os, urllib.parse
url = urllib.parse.urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer((url.hostname, url.port), Handler).serve_forever()
"""


@dataclass
class Outcome:
    kind: str  # "start", "spawn" or "ok"
    log: str
    seconds: float


class Bench:
    def __init__(self, base: Path, logs: Path):
        self.base, self.logs = base, logs
        self.confd = base / "jupyterhub_config.d"
        s = (base / "barehub.toml").read_text()
        self.hub_port = int(next(line.split("=")[1] for line in s.splitlines() if line.startswith("port")))
        self.n = 0
        self.fake = base / "fake-singleuser.py"
        self.fake.write_text(FAKE_SERVER)
        python = str(base / "hub" / "bin" / "python")
        self.drivers = {
            "fake": DRIVER % (DRIVER_TOKEN, [python, str(self.fake)]),
            # the real one, for a case whose failure only the server itself shows
            # (`# spawn-with: jupyterhub-singleuser`); as root, it needs --allow-root
            "jupyterhub-singleuser": DRIVER % (DRIVER_TOKEN, [python, "-m", "jupyterhub.singleuser",
                                                              "--allow-root"]),
        }
        self.proxy = self._start("jupyterhub-proxy.service")

    def _start(self, unit: str) -> Proc:
        argv, env_add, cwd, _user = unit_command(self.base / "generated" / unit)
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
        self.n += 1
        return Proc(argv, env=env, cwd=cwd, log=self.logs / f"{self.base.name}-{unit}.{self.n}.log", name=unit)

    def _reset(self, spawn_with: str = "fake") -> None:
        for p in self.confd.glob("*.py"):
            p.unlink()
        for p in (self.base / "state").glob("jupyterhub.sqlite*"):
            p.unlink()  # each run starts from a new database, as a first start would
        (self.confd / "zz-corpus-driver.py").write_text(self.drivers[spawn_with])

    def put(self, case: Path | None) -> None:
        """config.d holds the driver and the case (if any); the database is new."""
        spawn_with = "fake"
        if case is not None and "# spawn-with: jupyterhub-singleuser" in case.read_text():
            spawn_with = "jupyterhub-singleuser"
        self._reset(spawn_with)
        if case is not None:
            shutil.copy(case, self.confd / case.name)

    def outcome(self, case: Path | None, timeout: float = 60) -> Outcome:
        self.put(case)
        t0 = time.monotonic()
        hub = self._start("jupyterhub.service")
        api = f"http://127.0.0.1:{self.hub_port}/hub/api"
        kind = "start"
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and hub.alive():
                try:
                    if http(api + "/", timeout=2)[0] == 200:
                        kind = self._spawn(api)
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            else:
                if hub.alive():
                    kind = "timeout"
        finally:
            seconds = time.monotonic() - t0
            hub.stop(30, group=True)
            # the servers it started (each in a session of its own)
            for pattern in (str(self.fake), f"{self.base}/hub/bin/python -m jupyterhub.singleuser"):
                subprocess.run(["pkill", "-KILL", "-f", pattern], check=False)
        return Outcome(kind, hub.log.read_text(errors="replace"), seconds)

    def _spawn(self, api: str) -> str:
        """"ok" when a user's server starts and is ready, "spawn" when it cannot be started."""
        user = "nobody"  # a system account: the default authenticator (PAM) adds only those
        status, _ = http(f"{api}/users/{user}", token=DRIVER_TOKEN, method="POST")
        if status != 201:
            return "spawn"
        status, _ = http(f"{api}/users/{user}/server", token=DRIVER_TOKEN, method="POST", timeout=30)
        if status not in (201, 202):
            return "spawn"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body = http(f"{api}/users/{user}", token=DRIVER_TOKEN)
            server = json.loads(body).get("servers", {}).get("")
            if server and server.get("ready"):
                return "ok"
            if not server:
                return "spawn"  # no longer pending, and no server: the spawn failed
            time.sleep(0.1)
        return "spawn"

    def stop(self) -> None:
        self.proxy.stop(15, group=True)


def check(base: Path, python: Path) -> subprocess.CompletedProcess[str]:
    """`barehub check` from the base's env, as an admin (or ExecReload) runs it."""
    return subprocess.run([str(python), "-m", "barehub", "check", "--base", str(base)],
                          capture_output=True, text=True, timeout=120)
