"""Upgrades and rollback on a real systemd, in a container with no network.

Two releases of the test installer: this checkout's version, and the next one
(NEXT), built from a copy of the sources with the version bumped and the hub
unit's template changed. In release CI, the previous GitHub release's installer
(BAREHUB_PREVIOUS_INSTALLER) and this release's (BAREHUB_INSTALLER) instead. In order: install the first; a user with a running
server, API tokens and config.d files; upgrade while probes request the user's
server every 0.25 s (no failures: the proxy's configuration is the same, so
traefik is not restarted); rollback; an upgrade that a config.d file makes
fail under the new environment (aborted, the old hub keeps serving); the
older release run over the newer base (refused).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO, version, wait_for
from system import installers
from system.test_systemd import DRIVER_CONFIG, USER, Hub, Probes, assert_no_failures


def _next_month(v: str) -> str:
    year, month, _ = (int(x) for x in v.split("."))
    return f"{year + month // 12}.{month % 12 + 1}.0"


BASE = "/opt/barehub"
# Real installers (release CI): the previous release, then this one; else two built here.
GIVEN = (installers.given(installers.PREVIOUS_ENV), installers.given())
if (GIVEN[0] is None) != (GIVEN[1] is None):
    raise pytest.UsageError(f"set both {installers.PREVIOUS_ENV} and {installers.INSTALLER_ENV}, or neither")
REAL = GIVEN[0] is not None
FIRST = installers.version_of(GIVEN[0]) if REAL else version()
NEXT = installers.version_of(GIVEN[1]) if REAL else _next_month(FIRST)
MARKER = f"BAREHUB_TEST_RELEASE={NEXT}"  # only the NEXT built here has it in its hub unit template
# the jupyterhub NEXT's environment has (this checkout's pin)
JUPYTERHUB = re.search(r"^jupyterhub==(\S+)$", (REPO / "construct" / "pypi.lock").read_text(), re.M).group(1)
WHEELS = REPO / "build" / "wheels"
OUT = REPO / "build" / "test-installer"
SITE_PKG = "sitepkg_demo"  # a site addition: only in the first release's env


_INSIDE: dict[str, str] = {}  # version -> the installer's path in the container


def installer(v: str) -> str:
    return _INSIDE[v]


def build_next_release(tmp: Path) -> Path:
    """NEXT's test installer, from a copy of the sources: version bumped, hub unit template changed."""
    src = tmp / "src"
    for name in ("src", "templates"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for rel in ("src/barehub/__init__.py", "pyproject.toml"):
        p = src / rel
        text = p.read_text()
        assert f'"{FIRST}"' in text, rel
        p.write_text(text.replace(f'"{FIRST}"', f'"{NEXT}"', 1))
    unit = src / "templates" / "jupyterhub.service.j2"
    text = unit.read_text()
    anchor = "Environment=BAREHUB_BASE={{ layout.base }}\n"
    assert anchor in text
    unit.write_text(text.replace(anchor, anchor + f"Environment={MARKER}\n"))
    if not any(WHEELS.glob("hatchling-*.whl")):  # barehub's build backend, for an offline build
        subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "wheels"], check=True)
    wheel_dir = tmp / "wheel"
    subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-index", "--find-links", str(WHEELS), "--wheel-dir", str(wheel_dir), str(src)], check=True)
    (wheel,) = wheel_dir.glob(f"barehub-{NEXT}-*.whl")
    out = OUT / f"barehub-{NEXT}-Linux-x86_64.sh"
    subprocess.run(["/usr/bin/python3", str(REPO / "scripts" / "build_test_installer.py"), "--version", NEXT,
                    "--wheels", str(WHEELS), "--barehub-wheel", str(wheel),
                    "--requirements", str(REPO / "construct" / "pypi.lock"),
                    "--requirements", str(REPO / "tests" / "singleuser-requirements.txt"),
                    "--python", "/usr/bin/python3", "--out", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def release_installers(tmp_path_factory) -> tuple[Path, Path]:
    if REAL:
        first, nxt = GIVEN
        if installers.flavor_of(first) != installers.flavor_of(nxt):
            raise pytest.UsageError(f"{first.name} and {nxt.name} are not the same installer")
        print(f"upgrade from {first.name} to {nxt.name}")
        return first, nxt
    t0 = time.monotonic()
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "test-installer"], check=True)
    first = OUT / f"barehub-{FIRST}-Linux-x86_64.sh"
    nxt = build_next_release(tmp_path_factory.mktemp("next-release"))
    print(f"built the test installers {first.name} and {nxt.name} in {time.monotonic() - t0:.0f}s")
    return first, nxt


@pytest.fixture(scope="module")
def ct(container_factory, release_installers):
    c = container_factory("bh-upg", private_network=True)
    for v, path in zip((FIRST, NEXT), release_installers):
        c.push(path, "/root")
        _INSIDE[v] = installers.container_path(path)
    c.exec(["useradd", "--create-home", "--shell", "/bin/bash", USER])
    return c


@pytest.fixture(scope="module")
def hub(ct):
    return Hub(ct)


def run_installer(ct, v: str, *flags: str) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    r = ct.exec(["bash", installer(v), "-b", *flags], check=False, timeout=600)
    print(f"installer {v} -b {' '.join(flags)}: {time.monotonic() - t0:.0f}s, exit {r.returncode}")
    return r


def active(ct) -> str:
    return ct.exec(["readlink", f"{BASE}/hub"]).stdout.strip()


def admin_files(ct) -> str:
    """sha256 of everything the admin owns, and of the hub's secrets."""
    return ct.exec(["sh", "-c", f"cd {BASE} && find jupyterhub_config.d barehub.toml state/jupyterhub_cookie_secret "
                                "state/proxy_api_password -type f | sort | xargs sha256sum"]).stdout


def hub_environment(hub: Hub) -> str:
    return hub.systemctl("show", "-p", "Environment", "--value", "jupyterhub").stdout


def hub_description(hub: Hub) -> str:
    return hub.systemctl("show", "-p", "Description", "--value", "jupyterhub").stdout.strip()


def assert_intact(hub: Hub, before: dict) -> None:
    """Users, the service token, the user's token and running server, and config.d, as they were."""
    code, users = hub.api("/users")
    assert code == 200, "the service token from config.d still works"
    assert USER in [u["name"] for u in users]
    server = hub.server()
    assert server.get("ready") and server["state"]["pid"] == before["server_pid"], "the same server, adopted"
    assert hub.curl(f"/user/{USER}/api/status", token=before["user_token"])[0] == 200, "the user's token works"
    assert admin_files(hub.ct) == before["files"]


def test_install_the_first_release(ct, hub):
    r = run_installer(ct, FIRST)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert active(ct) == f"envs/{FIRST}"
    wait_for(hub.up, 60, what="hub through the proxy")


@pytest.fixture(scope="module")
def before(ct, hub):
    """A service token and a user through config.d, a running server, a user token."""
    pid = hub.main_pid("jupyterhub.service")
    hub.write(f"{BASE}/jupyterhub_config.d/20-driver.py", DRIVER_CONFIG)
    hub.systemctl("reload", "jupyterhub")
    wait_for(lambda: hub.main_pid("jupyterhub.service") not in (0, pid) and hub.up(), 60, what="hub reloaded")
    assert hub.api(f"/users/{USER}", "POST")[0] in (201, 409)
    assert hub.api(f"/users/{USER}/server", "POST")[0] in (201, 202)
    wait_for(lambda: hub.server().get("ready"), 120, what=f"{USER}'s server")
    code, body = hub.api(f"/users/{USER}/tokens", "POST", {"note": "probe", "expires_in": 7200})
    assert code == 201
    return {"user_token": body["token"], "server_pid": hub.server()["state"]["pid"], "files": admin_files(ct)}


def test_upgrade_under_load_keeps_everything(ct, hub, before, tmp_path):
    proxy_pid = hub.main_pid("jupyterhub-proxy.service")
    hub_pid = hub.main_pid("jupyterhub.service")
    assert MARKER not in hub_environment(hub)
    assert hub_description(hub) == f"JupyterHub (barehub {FIRST})"
    probes = Probes(hub, tmp_path, before["user_token"])
    r = run_installer(ct, NEXT)
    wait_for(hub.up, 60, what="hub API after the upgrade")
    time.sleep(1)
    assert_no_failures(probes.finish(), "upgrade")
    out = r.stdout
    print(out[out.find("barehub upgrade:"):])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    steps = ["check:", "back up the database", "jupyterhub upgrade-db", "re-render the generated files",
             f"switch {BASE}/hub", "daemon-reload", "jupyterhub-proxy.service unchanged and running: left alone",
             "start jupyterhub.service"]
    positions = [out.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), out[-4000:]
    assert active(ct) == f"envs/{NEXT}"
    assert hub.main_pid("jupyterhub-proxy.service") == proxy_pid, "the proxy's configuration is unchanged"
    assert hub.main_pid("jupyterhub.service") != hub_pid
    # the new release's unit is the one systemd loaded
    assert hub_description(hub) == f"JupyterHub (barehub {NEXT})"
    if not REAL:  # and the template changed here is in effect, in the unit and in the running hub
        assert MARKER in hub_environment(hub)
        environ = ct.exec(["cat", f"/proc/{hub.main_pid('jupyterhub.service')}/environ"]).stdout.split("\0")
        assert MARKER in environ
    assert f"barehub {NEXT}" in ct.exec([f"{BASE}/hub/bin/barehub", "--version"]).stdout
    assert_intact(hub, before)
    backup = ct.exec(["sh", "-c", f"stat -c '%a %n' {BASE}/state/backups/jupyterhub.sqlite.{FIRST}-to-{NEXT}.*"]).stdout
    assert backup.startswith("600 "), backup
    versions = ct.exec([f"{BASE}/hub/bin/barehub", "versions"]).stdout
    assert re.search(rf"^\* {re.escape(NEXT)} .*\(active\)$", versions, re.M), versions
    assert re.search(rf"^  {re.escape(FIRST)} .*\(rollback target\)$", versions, re.M), versions


def test_rollback_keeps_everything(ct, hub, before, tmp_path):
    proxy_pid = hub.main_pid("jupyterhub-proxy.service")
    probes = Probes(hub, tmp_path, before["user_token"])
    t0 = time.monotonic()
    r = ct.exec([f"{BASE}/hub/bin/barehub", "rollback"], check=False, timeout=300)
    print(f"barehub rollback: {time.monotonic() - t0:.0f}s\n{r.stdout}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wait_for(hub.up, 60, what="hub API after the rollback")
    time.sleep(1)
    assert_no_failures(probes.finish(), "rollback")
    assert active(ct) == f"envs/{FIRST}"
    assert MARKER not in hub_environment(hub)
    assert hub_description(hub) == f"JupyterHub (barehub {FIRST})"
    assert hub.main_pid("jupyterhub-proxy.service") == proxy_pid
    assert f"barehub {FIRST}" in ct.exec([f"{BASE}/hub/bin/barehub", "--version"]).stdout
    assert_intact(hub, before)


def test_upgrade_with_a_config_the_new_hub_would_refuse_changes_nothing(ct, hub, before):
    """One file of the gate's corpus (tests/config_corpus): the new env's gate refuses it."""
    case = REPO / "tests" / "config_corpus" / "broken" / "11-role-unknown-scope.py"
    target = f"{BASE}/jupyterhub_config.d/90-{case.name}"  # after 20-driver.py, which sets load_roles too
    hub.write(target, case.read_text())
    hub_pid = hub.main_pid("jupyterhub.service")
    files = admin_files(ct)
    try:
        r = run_installer(ct, NEXT, "-u")
        out = r.stdout + r.stderr
        assert r.returncode != 0, out[-3000:]
        assert f"{target}:" in out and "Scope 'read:nonsense' for role viewer does not exist" in out
        assert f"Nothing was changed; barehub {FIRST} keeps running." in out
        assert active(ct) == f"envs/{FIRST}" and admin_files(ct) == files
        assert hub.main_pid("jupyterhub.service") == hub_pid and hub.up()
    finally:
        ct.exec(["rm", "-f", target])


def test_upgrade_that_fails_the_check_changes_nothing(ct, hub, before):
    # a site addition in the active env, used by a config.d file: the new env lacks it
    sp = ct.exec([f"{BASE}/hub/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ct.exec(["sh", "-c", f"mkdir -p {sp}/{SITE_PKG} {sp}/{SITE_PKG}-1.0.dist-info && "
                         f"echo 'GREETING = \"hi\"' > {sp}/{SITE_PKG}/__init__.py && "
                         f"printf 'Metadata-Version: 2.1\\nName: sitepkg-demo\\nVersion: 1.0\\n' > {sp}/{SITE_PKG}-1.0.dist-info/METADATA && "
                         f"echo pip > {sp}/{SITE_PKG}-1.0.dist-info/INSTALLER && "
                         f"printf '{SITE_PKG}/__init__.py,,\\n' > {sp}/{SITE_PKG}-1.0.dist-info/RECORD"])
    site = f"{BASE}/jupyterhub_config.d/25-site.py"
    hub.write(site, f"import {SITE_PKG}\nc.JupyterHub.template_vars = {{'greeting': {SITE_PKG}.GREETING}}\n")
    assert ct.exec([f"{BASE}/hub/bin/barehub", "check"], check=False).returncode == 0, "the active env has it"
    hub_pid = hub.main_pid("jupyterhub.service")
    proxy_pid = hub.main_pid("jupyterhub-proxy.service")
    files = admin_files(ct)

    r = run_installer(ct, NEXT, "-u")
    out = r.stdout + r.stderr
    print(out[out.find("barehub upgrade:"):])
    assert r.returncode != 0
    assert "sitepkg-demo 1.0 (pip)" in out, "listed as a site addition"
    assert f"{site}:1: ModuleNotFoundError" in out
    assert f"the new environment lacks the Python package providing `{SITE_PKG}` (sitepkg-demo 1.0" in out
    assert f"{BASE}/envs/{NEXT}/bin/python -m pip install 'sitepkg-demo==1.0'" in out
    assert f"Nothing was changed; barehub {FIRST} keeps running." in out
    assert active(ct) == f"envs/{FIRST}"
    assert hub.main_pid("jupyterhub.service") == hub_pid and hub.main_pid("jupyterhub-proxy.service") == proxy_pid
    assert hub.up() and admin_files(ct) == files
    assert hub.curl(f"/user/{USER}/api/status", token=before["user_token"])[0] == 200


def test_older_release_over_newer_base_is_refused(ct, hub, before):
    # the fix the error names (offline here: the package is copied, as pip would install it)
    new_sp = ct.exec([f"{BASE}/envs/{NEXT}/bin/python", "-c",
                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    old_sp = new_sp.replace(f"/envs/{NEXT}/", f"/envs/{FIRST}/")
    ct.exec(["sh", "-c", f"cp -a {old_sp}/{SITE_PKG} {old_sp}/{SITE_PKG}-1.0.dist-info {new_sp}/"])
    r = run_installer(ct, NEXT, "-u")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert "sitepkg-demo" not in r.stdout
    wait_for(hub.up, 60, what="hub after the second upgrade")
    assert active(ct) == f"envs/{NEXT}"
    hub_pid = hub.main_pid("jupyterhub.service")

    r = run_installer(ct, FIRST, "-u")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"barehub {NEXT} is active" in out and f"this installer is the older {FIRST}" in out
    assert "barehub rollback" in out
    assert active(ct) == f"envs/{NEXT}"
    assert hub.main_pid("jupyterhub.service") == hub_pid and hub.up()
    assert_intact(hub, {**before, "files": admin_files(ct)})


def test_rollback_into_an_env_that_cannot_load_the_config_is_refused(ct, hub, before):
    """A spawner class only the active (newer) env has: the old env's gate refuses the rollback."""
    new_sp = ct.exec([f"{BASE}/envs/{NEXT}/bin/python", "-c",
                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ct.exec(["sh", "-c", f"printf 'from jupyterhub.spawner import LocalProcessSpawner\\n"
                         f"class SiteSpawner(LocalProcessSpawner):\\n    pass\\n' > {new_sp}/newonly_spawner.py"])
    site = f"{BASE}/jupyterhub_config.d/26-spawner.py"
    hub.write(site, 'c.JupyterHub.spawner_class = "newonly_spawner.SiteSpawner"\n')
    try:
        assert ct.exec([f"{BASE}/hub/bin/barehub", "check"], check=False).returncode == 0, "the new env has it"
        hub_pid = hub.main_pid("jupyterhub.service")
        r = ct.exec([f"{BASE}/hub/bin/barehub", "rollback"], check=False, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert f"barehub {FIRST} cannot load the current configuration" in out
        assert f"{site}:1: c.JupyterHub.spawner_class = 'newonly_spawner.SiteSpawner'" in out
        assert "No module named 'newonly_spawner'" in out and "Nothing was changed" in out
        assert active(ct) == f"envs/{NEXT}"
        assert hub.main_pid("jupyterhub.service") == hub_pid and hub.up()
    finally:
        ct.exec(["rm", "-f", site, f"{new_sp}/newonly_spawner.py"])


def test_prune_and_env_export(ct):
    r = ct.exec([f"{BASE}/hub/bin/barehub", "prune", "--keep", "1"])
    assert f"kept {BASE}/envs/{FIRST} (rollback target)" in r.stdout
    assert ct.exec(["test", "-d", f"{BASE}/envs/{FIRST}"], check=False).returncode == 0
    out = ct.exec([f"{BASE}/hub/bin/barehub", "env", "export"]).stdout
    assert out.startswith(f"# barehub {NEXT}: environment {BASE}/envs/{NEXT}")
    assert re.search(rf"^jupyterhub=={re.escape(JUPYTERHUB)}$", out, re.M) and re.search(rf"^barehub=={NEXT}$", out, re.M)
