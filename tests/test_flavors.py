"""Flavors (flavors/<name>.yaml, scripts/flavor.py), the Slurm flavor's example and
the idle-culler example every base gets.

No constructor here: each flavor's generated construct.yaml goes through the same
static checker as the base's (tests/test_construct.py), and its pins are compared
with its PyPI lock like tests/test_versions.py does for the base.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import flavor  # noqa: E402
import lockcheck  # noqa: E402
from barehub import hubconfig, render  # noqa: E402
from helpers import enable_example, example_layout  # noqa: E402

FLAVORS = flavor.flavor_names()
SLURM_EXAMPLE = ROOT / "flavors" / "slurm" / "40-slurm.py.example"
SLURM_FAIL_FAST = ROOT / "flavors" / "slurm" / "41-slurm-fail-fast.py.example"
SYSTEMD_EXAMPLE = ROOT / "flavors" / "systemdspawner" / "40-systemdspawner.py.example"
# Package names that would make the base installer pick a spawner or an authenticator.
OPINIONS = re.compile(r"spawner|authenticator", re.I)


@pytest.fixture(scope="module")
def base_info():
    return flavor.base_info()


# --- the base stays free of opinions ----------------------------------------


def test_base_installer_has_no_spawner_or_authenticator(base_info):
    names = lockcheck.exact_pins(base_info["specs"])[0]
    assert not [n for n in names if OPINIONS.search(n)]
    assert not [n for n in lockcheck.read_lock() if OPINIONS.search(n)]
    assert "batchspawner" not in lockcheck.CONSTRUCT_YAML.read_text()
    # the culler is not an opinion: it is in every installer, off until enabled
    assert "jupyterhub-idle-culler" in names


def test_there_is_a_slurm_flavor():
    assert "slurm" in FLAVORS
    slurm = flavor.load("slurm")
    assert "batchspawner ==1.3.0" in slurm["specs"]
    assert slurm["examples"] == ["slurm/40-slurm.py.example", "slurm/41-slurm-fail-fast.py.example"]


# --- every flavor: its file, its generated construct.yaml, its pins --------------


@pytest.mark.parametrize("name", FLAVORS)
def test_flavor_file_is_valid(name, base_info):
    assert flavor.problems(name, flavor.load(name), base_info) == []


@pytest.mark.parametrize("name", FLAVORS)
def test_generated_construct_yaml_passes_the_base_checks(name, base_info, tmp_path):
    path = flavor.render(name, tmp_path)
    assert path == tmp_path / name / "construct.yaml"
    # plain YAML: parsed the way constructor parses it, with no environment at all
    info = lockcheck.parse_construct(path, environ={})
    assert lockcheck.check_construct(info, path.parent) == []
    pins, loose = lockcheck.exact_pins(info["specs"])
    assert loose == []
    # the base, unchanged, plus the flavor
    assert info["name"] == f"barehub-{name}"
    assert info["specs"] == base_info["specs"] + flavor.load(name)["specs"]
    for key in set(base_info) - {"name", "specs", "post_install", "extra_files"}:
        assert info[key] == base_info[key], key
    assert (path.parent / info["post_install"]).resolve() == ROOT / "post_install" / "post_install.sh"
    # the release version is the base's, in the installer name and in the prefix
    assert info["version"] == base_info["version"]
    assert lockcheck.version_mismatches(lockcheck.release_versions(info)) == []


@pytest.mark.parametrize("name", FLAVORS)
def test_generated_construct_yaml_ships_the_examples_outside_config_d(name, tmp_path):
    path = flavor.render(name, tmp_path)
    info = lockcheck.parse_construct(path, environ={})
    dests = {}
    for item in info["extra_files"]:
        ((src, dest),) = item.items()
        dests[dest] = (path.parent / src).resolve()
    for example in flavor.load(name)["examples"]:
        dest = f"share/barehub/examples/{Path(example).name}"
        assert dests[dest] == (ROOT / "flavors" / example).resolve()
    assert "share/barehub/flavor.json" in dests
    assert not [d for d in dests if "jupyterhub_config.d" in d]


@pytest.mark.parametrize("name", FLAVORS)
def test_flavor_pins_agree_with_its_lock(name):
    assert flavor.lock_problems(name, flavor.load(name)) == []
    lock = lockcheck.read_lock(flavor.lock_file(name))
    for pkg, version in flavor.pypi_pins(flavor.load(name)).items():
        assert lock[pkg] == version


def test_slurm_lock_is_only_what_the_base_lock_lacks():
    lock = lockcheck.read_lock(flavor.lock_file("slurm"))
    assert lock["batchspawner"] == "1.3.0"
    assert {"jupyter-server", "jupyterlab", "ipykernel"} <= set(lock)
    assert not set(lock) & set(lockcheck.read_lock())


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda f: f["specs"].append("jupyterhub ==6.1.1"), "pinned by the base already"),
        (lambda f: f["specs"].append("batchspawner >=1.3"), "not an exact pin"),
        (lambda f: f.update(examples=["slurm/nope.py.example"]), "does not exist"),
        (lambda f: f.update(examples=["slurm/40-slurm.py.example", "other/40-slurm.py.example"]), "same file name"),
        (lambda f: f.update(name="other"), "must be the file name"),
        (lambda f: f.update(spec=[]), "unknown key 'spec'"),
    ],
)
def test_flavor_checker_reports_mistakes(base_info, change, expected):
    bad = copy.deepcopy(flavor.load("slurm"))
    change(bad)
    assert any(expected in p for p in flavor.problems("slurm", bad, base_info)), flavor.problems("slurm", bad, base_info)


def test_flavor_lock_mismatch_is_reported():
    bad = copy.deepcopy(flavor.load("slurm"))
    bad["specs"] = ["batchspawner ==1.2.0", "jupyterlab ==4.6.6"]
    found = flavor.lock_problems("slurm", bad)
    assert any("pins batchspawner 1.2.0" in p for p in found), found
    assert any("roots" in p for p in found), found


# --- the Slurm example --------------------------------------------------------


@pytest.fixture
def layout(tmp_path):
    return example_layout(tmp_path, '[hub]\naddress = "0.0.0.0"\n')


def configured(layout, *files: tuple[str, str]) -> Config:
    """The hub's Config after barehub's base settings and the given config.d files."""
    c = Config()
    hubconfig.base_config(layout, c)
    for name, text in files:
        path = layout.config_d / name
        path.write_text(text)
        hubconfig.run_config_d_file(path, c)
    return c


@pytest.fixture
def batchspawner_module(monkeypatch):
    """The real batchspawner when installed (the Slurm flavor's env), else a stand-in."""
    try:
        import batchspawner

        return batchspawner
    except ImportError:
        stub = types.ModuleType("batchspawner")
        monkeypatch.setitem(sys.modules, "batchspawner", stub)
        return None


def test_slurm_example_is_inert_as_shipped(layout):
    text = SLURM_EXAMPLE.read_text()
    compile(text, str(SLURM_EXAMPLE), "exec")
    before = configured(layout)
    after = configured(layout, ("40-slurm.py", text))
    assert after == before
    # every line is a comment or blank: nothing runs until the admin uncomments it
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())


def test_slurm_example_enabled_configures_slurmspawner(layout, batchspawner_module):
    c = configured(layout, ("40-slurm.py", enable_example(SLURM_EXAMPLE.read_text())))
    hub_bin = layout.base / "hub" / "bin"
    assert c.JupyterHub.spawner_class == "batchspawner.SlurmSpawner"
    assert c.Spawner.cmd == [str(hub_bin / "jupyterhub-singleuser")]
    assert c.SlurmSpawner.batchspawner_singleuser_cmd == str(hub_bin / "batchspawner-singleuser")
    assert Path(c.Spawner.cmd[0]).is_absolute()
    # compute nodes reach the head node by name, on hub.port (barehub.toml's default)
    assert c.JupyterHub.hub_connect_url == f"http://{socket.getfqdn()}:81"
    assert c.SlurmSpawner.req_partition == "batch"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", c.SlurmSpawner.req_runtime)
    assert re.fullmatch(r"\d+[KMGT]", c.SlurmSpawner.req_memory)
    assert c.SlurmSpawner.exec_prefix == "sudo -E -u {username}"
    # barehub's own settings are untouched
    assert c.JupyterHub.cleanup_servers is False
    if batchspawner_module is None:
        print("batchspawner is not installed here: trait names not checked against it")
        return
    traits = batchspawner_module.SlurmSpawner.class_traits(config=True)
    for section in ("SlurmSpawner", "Spawner"):
        for trait in c[section]:
            assert trait in traits, f"c.{section}.{trait} is not a SlurmSpawner setting"


def test_slurm_fail_fast_example_is_a_slurmspawner(layout):
    """41-slurm-fail-fast.py.example is enabled as shipped: it must load and keep every
    c.SlurmSpawner setting (tests/test_slurm.py shows it failing a dying job's spawn)."""
    batchspawner = pytest.importorskip("batchspawner", reason="the Slurm flavor's batchspawner is not in this venv (make test-deps installs it)")
    c = configured(layout, ("40-slurm.py", enable_example(SLURM_EXAMPLE.read_text())),
                   ("41-slurm-fail-fast.py", SLURM_FAIL_FAST.read_text()))
    cls = c.JupyterHub.spawner_class
    assert issubclass(cls, batchspawner.SlurmSpawner) and cls is not batchspawner.SlurmSpawner
    assert cls(config=c).req_partition == "batch"


def test_examples_enabled_load_on_their_own(layout, batchspawner_module):
    """`barehub install` checks each config.d file against an empty Config (preflight):
    an enabled example must not depend on barehub's base settings."""
    for name, text in (("40-slurm.py", enable_example(SLURM_EXAMPLE.read_text())),
                       ("40-systemdspawner.py", enable_example(SYSTEMD_EXAMPLE.read_text())),
                       ("50-idle-culler.py", culler_example(layout))):
        path = layout.config_d / name
        path.write_text(text)
        hubconfig.run_config_d_file(path, Config())


def test_slurm_example_sudoers_passes_visudo(tmp_path):
    visudo = shutil.which("visudo") or ("/usr/sbin/visudo" if Path("/usr/sbin/visudo").exists() else None)
    if not visudo:
        pytest.skip("visudo not found (Debian package sudo; `make apt-deps` installs it)")
    text = SLURM_EXAMPLE.read_text()
    block = re.search(r"^# BEGIN sudoers\n(.*?)^# END sudoers$", text, re.S | re.M)
    assert block, "no '# BEGIN sudoers' ... '# END sudoers' block"
    lines = [re.sub(r"^#\s*", "", line) for line in block[1].splitlines()]
    assert any("NOPASSWD:SETENV:" in line for line in lines)
    sudoers = tmp_path / "barehub-slurm"
    sudoers.write_text("\n".join(lines) + "\n")
    sudoers.chmod(0o440)
    result = subprocess.run([visudo, "-c", "-f", str(sudoers)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # and visudo does reject a broken line, so the check means something
    sudoers.write_text("\n".join(lines) + "\njupyterhub ALL = (BAREHUB_USERS NOPASSWD: BAREHUB_SLURM\n")
    assert subprocess.run([visudo, "-c", "-f", str(sudoers)], capture_output=True).returncode != 0


# --- the systemdspawner example ---------------------------------------------------


@pytest.fixture
def systemdspawner_class(monkeypatch):
    """The real SystemdSpawner, imported from its wheel in build/wheels (pure Python), or None."""
    version = lockcheck.read_lock(flavor.lock_file("systemdspawner"))["jupyterhub-systemdspawner"]
    wheel = ROOT / "build" / "wheels" / f"jupyterhub_systemdspawner-{version}-py3-none-any.whl"
    if not wheel.is_file():
        return None
    monkeypatch.syspath_prepend(str(wheel))
    for mod in [m for m in sys.modules if m == "systemdspawner" or m.startswith("systemdspawner.")]:
        monkeypatch.delitem(sys.modules, mod)
    from systemdspawner import SystemdSpawner

    return SystemdSpawner


def test_systemdspawner_example_is_inert_as_shipped(layout):
    text = SYSTEMD_EXAMPLE.read_text()
    compile(text, str(SYSTEMD_EXAMPLE), "exec")
    assert configured(layout, ("40-systemdspawner.py", text)) == configured(layout)
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())


def test_systemdspawner_example_enabled(layout, systemdspawner_class):
    c = configured(layout, ("40-systemdspawner.py", enable_example(SYSTEMD_EXAMPLE.read_text())))
    assert c.JupyterHub.spawner_class == "systemdspawner.SystemdSpawner"
    assert c.Spawner.cmd == [str(layout.base / "hub" / "bin" / "jupyterhub-singleuser")]
    assert c.PAMAuthenticator.allowed_groups == {"jupyterhub-users"}
    assert c.Spawner.mem_limit == "4G" and c.Spawner.cpu_limit == 2.0
    assert c.SystemdSpawner.unit_extra_properties == {
        "TasksMax": "512", "ProtectSystem": "strict", "ReadWritePaths": "/home/{USERNAME}"}
    assert c.SystemdSpawner.slice == "jupyter.slice"
    assert c.JupyterHub.cleanup_servers is False  # barehub's own settings are untouched
    from jupyterhub.auth import PAMAuthenticator

    assert set(c.PAMAuthenticator) <= set(PAMAuthenticator.class_traits(config=True))
    if systemdspawner_class is None:
        print("no jupyterhub-systemdspawner wheel in build/wheels (`make wheels`): trait names not checked")
        return
    traits = systemdspawner_class.class_traits(config=True)
    for section in ("SystemdSpawner", "Spawner"):
        for trait in c[section]:
            assert trait in traits, f"c.{section}.{trait} is not a SystemdSpawner setting"


# --- the idle-culler example (every base) ------------------------------------------

CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def culler_example(layout) -> str:
    return render.render("50-idle-culler.py.example.j2", layout=layout)


def find_culler(c: Config) -> dict:
    return next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")


def test_culler_example_adds_a_least_privilege_managed_service(layout):
    c = configured(layout, ("50-idle-culler.py", culler_example(layout)))
    culler = find_culler(c)
    assert culler["command"][:3] == [f"{layout.hub_link}/bin/python", "-m", "jupyterhub_idle_culler"]
    options = dict(arg.lstrip("-").split("=", 1) for arg in culler["command"][3:])
    # above the 300 s activity interval, and the comment says why
    assert int(options["timeout"]) == 3600 and int(options["cull-every"]) <= int(options["timeout"])
    assert "300 s" in culler_example(layout) and "JUPYTERHUB_ACTIVITY_INTERVAL" in culler_example(layout)
    (role,) = c.JupyterHub.load_roles
    assert role == {"name": "idle-culler", "services": ["idle-culler"], "scopes": CULLER_SCOPES}
    assert "api_token" not in culler  # a managed service: the hub makes its token


def test_culler_example_keeps_other_services_and_roles(layout):
    earlier = (
        'c.JupyterHub.services = [{"name": "a", "api_token": "x" * 32}]\n'
        'c.JupyterHub.load_roles.append({"name": "a", "services": ["a"], "scopes": ["read:users"]})\n'
    )
    later = 'c.JupyterHub.services.append({"name": "b", "api_token": "y" * 32})\n'
    c = configured(layout, ("20-a.py", earlier), ("50-idle-culler.py", culler_example(layout)), ("70-b.py", later))
    assert [s["name"] for s in c.JupyterHub.services] == ["a", "idle-culler", "b"]
    assert [r["name"] for r in c.JupyterHub.load_roles] == ["a", "idle-culler"]


def test_a_later_file_can_change_the_culler_options(layout):
    # the recipe given in the example's comment
    later = (
        'culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")\n'
        'culler["command"][3:] = ["--timeout=7200", "--cull-every=600"]\n'
    )
    assert later.splitlines()[0] in culler_example(layout)
    c = configured(layout, ("50-idle-culler.py", culler_example(layout)), ("60-culler-timeout.py", later))
    assert find_culler(c)["command"][3:] == ["--timeout=7200", "--cull-every=600"]


def test_culler_example_is_inert_until_copied(layout):
    (layout.config_d / "50-idle-culler.py.example").write_text(culler_example(layout))
    assert hubconfig.config_d_files(layout) == []


# --- make installer FLAVOR=... ------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_installer_with_a_flavor_renders_then_builds_it(tmp_path):
    # A stand-in constructor on PATH; `make -n` only prints what would run.
    fake = tmp_path / "constructor"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", "-n", "installer", "FLAVOR=slurm"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    render_line = next(i for i, line in enumerate(lines)
                       if f"scripts/flavor.py render slurm --channel {ROOT}/build/channel" in line)
    build = lines.index("constructor build/flavors/slurm/ --output-dir build/installer/barehub-slurm-linux-64 --platform linux-64")
    assert render_line < build
    assert not [line for line in lines if "constructor construct/" in line], result.stdout
