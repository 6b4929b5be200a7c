"""The hidden hub config and the jupyterhub_config.d loader.

The last tests start the real `jupyterhub` with the packaged config file and
`--show-config`, which loads the configuration and exits without serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from traitlets.config import Config

import barehub
from barehub import hubconfig, proxy, settings
from barehub.install import Context, initial_settings_text, render_generated
from barehub.layout import Layout
from helpers import example_layout

SRC = Path(barehub.__file__).resolve().parents[1]


@pytest.fixture
def layout(tmp_path):
    return example_layout(tmp_path, "[proxy]\nhttp_port = 8000\napi_port = 8199\n")


def test_base_config_owns_state_and_the_external_proxy(layout):
    c = Config()
    hubconfig.base_config(layout, c)
    assert c.JupyterHub.db_url == f"sqlite:///{layout.state}/jupyterhub.sqlite"
    assert c.JupyterHub.cookie_secret_file == str(layout.state / "jupyterhub_cookie_secret")
    assert c.JupyterHub.pid_file == str(layout.state / "jupyterhub.pid")
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.proxy_class == "barehub.traefik_proxy.BarehubProxy"
    t = c.TraefikFileProviderProxy
    assert t.should_start is False
    assert t.traefik_api_password == layout.proxy_api_password.read_text().strip()
    # no authenticator, no spawner: JupyterHub's defaults stand
    assert "authenticator_class" not in c.JupyterHub and "spawner_class" not in c.JupyterHub


def test_hub_and_traefik_static_config_agree(layout):
    """Entry point names, the API address and the rules location match traefik.toml."""
    c = Config()
    hubconfig.base_config(layout, c)
    ctx = Context(layout, settings.load(layout.settings_file), Path(sys.prefix))
    render_generated(ctx)
    static = tomllib.loads(layout.traefik_toml.read_text())
    t = c.TraefikFileProviderProxy
    assert set(static["entryPoints"]) == {t.traefik_entrypoint, t.traefik_api_entrypoint}
    api_address = static["entryPoints"][t.traefik_api_entrypoint]["address"]
    assert t.traefik_api_url == f"http://{api_address}" and api_address.startswith("127.0.0.1:")
    assert static["entryPoints"][t.traefik_entrypoint]["address"] == ":8000"
    assert Path(t.dynamic_config_file).parent == Path(static["providers"]["file"]["directory"])
    assert c.JupyterHub.bind_url == "http://:8000"


def test_config_d_runs_in_lexicographic_order_and_only_py(layout):
    d = layout.config_d
    (d / "2-second.py").write_text("c.Spawner.default_url = '/two'\norder.append('2')\n")
    (d / "10-first.py").write_text("c.Spawner.default_url = '/ten'\norder.append('10')\n")
    (d / "99-off.py.example").write_text("raise SystemExit('examples are not loaded')\n")
    (d / "README.md").write_text("not python")
    c = Config()
    loaded = []

    # `order` is injected by a first file so later files can record themselves
    (d / "0-setup.py").write_text("import builtins\nbuiltins.order = []\n")
    try:
        files = hubconfig.load_config_d(layout, c)
        import builtins

        loaded = builtins.order
    finally:
        import builtins

        if hasattr(builtins, "order"):
            del builtins.order
    assert [f.name for f in files] == ["0-setup.py", "10-first.py", "2-second.py"]
    assert loaded == ["10", "2"]
    assert c.Spawner.default_url == "/two"


def test_config_d_sees_c_get_config_and_its_own_file(layout):
    (layout.config_d / "10-x.py").write_text(
        "assert get_config() is c\nc.JupyterHub.template_vars = {'file': __file__}\n"
    )
    c = Config()
    hubconfig.load_config_d(layout, c)
    assert c.JupyterHub.template_vars == {"file": str(layout.config_d / "10-x.py")}


def test_error_names_the_file_and_line(layout):
    bad = layout.config_d / "20-bad.py"
    bad.write_text("x = 1\n\ndef f():\n    return undefined_name\n\nf()\n")
    with pytest.raises(hubconfig.ConfigDError) as e:
        hubconfig.load_config_d(layout, Config())
    assert e.value.where == f"{bad}:4"
    assert "NameError" in e.value.summary and f'File "{bad}", line 4' in e.value.detail


def test_syntax_error_names_the_file_and_line(layout):
    bad = layout.config_d / "30-syntax.py"
    bad.write_text("c.JupyterHub.admin_access = True\nc.Spawner.cmd = [\n")
    with pytest.raises(hubconfig.ConfigDError) as e:
        hubconfig.load_config_d(layout, Config())
    assert e.value.where.startswith(f"{bad}:") and "SyntaxError" in e.value.summary


# ----------------------------------------------------------- the real jupyterhub

def jupyterhub(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("jupyterhub", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip(f"jupyterhub is not installed beside {sys.executable}; `make test` installs it")
    hidden = Path(barehub.__file__).parent / "jupyterhub_config.py"
    env = {**os.environ, "BAREHUB_BASE": str(layout.base), "PYTHONPATH": str(SRC)}
    return subprocess.run([exe, f"--config={hidden}", *args], capture_output=True, text=True, env=env,
                          cwd=layout.state, timeout=120)


def test_real_hub_loads_base_then_config_d(layout):
    (layout.config_d / "50-site.py").write_text("c.JupyterHub.cleanup_servers = True\nc.Spawner.default_url = '/lab'\n")
    r = jupyterhub(layout, "--show-config")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "default_url" in out and "'/lab'" in out
    assert f"sqlite:///{layout.state}/jupyterhub.sqlite" in out
    assert "BarehubProxy" in out
    # a config.d file can override the base (here: cleanup_servers)
    assert "cleanup_servers" in out and "True" in out.split("cleanup_servers", 1)[1].splitlines()[0]


def test_real_hub_traceback_names_the_config_d_file(layout):
    bad = layout.config_d / "40-broken.py"
    bad.write_text("c.JupyterHub.admin_access = True\nimport not_a_module_anywhere\n")
    r = jupyterhub(layout, "--show-config")
    assert r.returncode != 0
    assert f'File "{bad}", line 2' in r.stderr, r.stderr
    assert f"barehub: the error is in {bad}:2" in r.stderr


def test_real_hub_without_base_says_how_to_start(layout, monkeypatch):
    exe = shutil.which("jupyterhub", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip(f"jupyterhub is not installed beside {sys.executable}; `make test` installs it")
    hidden = Path(barehub.__file__).parent / "jupyterhub_config.py"
    env = {k: v for k, v in os.environ.items() if k != "BAREHUB_BASE"}
    env["PYTHONPATH"] = str(SRC)
    r = subprocess.run([exe, f"--config={hidden}", "--show-config"], capture_output=True, text=True, env=env,
                       cwd=layout.state, timeout=120)
    assert r.returncode != 0 and "BAREHUB_BASE is not set" in r.stdout + r.stderr


def test_initial_settings_and_proxy_names_are_consistent(tmp_path):
    s = settings.parse(initial_settings_text(Layout.at(tmp_path), {}))
    p = proxy.proxy_config(Layout.at(tmp_path), s)
    assert p.api_url == "http://127.0.0.1:99" and p.web_listen == ":80"
