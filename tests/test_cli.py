"""`barehub check` and `barehub status`, run as an admin would."""

from __future__ import annotations

import pytest

from test_install import barehub, install

import barehub as pkg


def test_check_ok_then_names_file_and_line(base):
    assert install(base, "--no-start").returncode == 0
    (base / "jupyterhub_config.d" / "10-ok.py").write_text("c.Spawner.default_url = '/lab'\n")
    r = barehub("check", "--base", str(base))
    assert r.returncode == 0 and "1 file(s)" in r.stdout, r.stderr
    bad = base / "jupyterhub_config.d" / "20-bad.py"
    bad.write_text("c.Spawner.default_url = '/lab'\nc.Spawner.cmd = undefined_thing\n")
    r = barehub("check", "--base", str(base))
    assert r.returncode == 1
    assert f"error: {bad}:2: NameError: name 'undefined_thing' is not defined" in r.stderr
    assert "Fix what is named above" in r.stderr


def test_check_starts_nothing_and_needs_a_base(tmp_path):
    r = barehub("check", "--base", str(tmp_path))
    assert r.returncode == 2 and "is not a barehub base" in r.stderr


def test_status_shows_version_base_env_url(base):
    assert install(base, "--no-start").returncode == 0
    (base / "barehub.toml").write_text('[hub]\npublic_url = "https://hub.example.org"\n')
    r = barehub("status", "--base", str(base))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"barehub     {pkg.__version__}" in out
    assert f"base        {base}" in out
    assert f"hub env     envs/{pkg.__version__}" in out
    assert "public URL  https://hub.example.org/" in out
    if "systemd is not running" not in out:
        pytest.fail("status must report unit states or say systemd is not running:\n" + out)


def test_default_base_follows_the_environment(tmp_path):
    from barehub.cli import default_base

    assert str(default_base({}, "/opt/barehub/envs/2026.11.0")) == "/opt/barehub"
    assert str(default_base({"BAREHUB_BASE": "/srv/jh"}, "/opt/barehub/envs/2026.11.0")) == "/srv/jh"
    assert str(default_base({}, "/usr")) == "/opt/barehub"
    # BASE/hub/bin/barehub: sys.prefix is the hub link itself
    (tmp_path / "envs" / "2026.11.0").mkdir(parents=True)
    (tmp_path / "hub").symlink_to("envs/2026.11.0")
    assert default_base({}, str(tmp_path / "hub")) == tmp_path
