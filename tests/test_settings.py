"""barehub.toml validation: defaults, types, unknown keys, invalid TOML."""

import tomllib

import pytest

from barehub import settings
from barehub.install import initial_settings_text
from barehub.layout import Layout


def test_commented_default_file_parses_to_the_defaults(tmp_path):
    text = initial_settings_text(Layout.at(tmp_path), {})
    assert settings.parse(text).values == settings.Settings.defaults().values
    # every key is documented in the file, with its default, commented out
    for section, keys in settings.SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"# {key} = " in text


def test_values_written_at_install_time_are_active(tmp_path):
    text = initial_settings_text(Layout.at(tmp_path), {"proxy": {"http_port": 8000}, "hub": {"user": "jhub"}})
    s = settings.parse(text)
    assert s["proxy.http_port"] == 8000 and s["hub.user"] == "jhub"
    assert tomllib.loads(text) == {"proxy": {"http_port": 8000}, "hub": {"user": "jhub"}, "https": {}}


def test_invalid_toml_names_file_and_line():
    with pytest.raises(settings.SettingsError) as e:
        settings.parse("[proxy]\nhttp_port = 80\nhttp_port 81\n", "/opt/barehub/barehub.toml")
    msg = str(e.value)
    assert "/opt/barehub/barehub.toml" in msg and "line 3" in msg and "barehub check" in msg


def test_unknown_key_is_named_with_the_known_ones():
    with pytest.raises(settings.SettingsError) as e:
        settings.parse("[proxy]\nhttp_prot = 8000\n", "barehub.toml")
    msg = str(e.value)
    assert "unknown key proxy.http_prot" in msg and "http_port" in msg


def test_unknown_section():
    with pytest.raises(settings.SettingsError, match=r"unknown section \[prxy\]"):
        settings.parse("[prxy]\nhttp_port = 8000\n")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[proxy]\nhttp_port = "80"\n', "proxy.http_port = '80' must be a int"),
        ("[proxy]\nhttp_port = 70000\n", "between 1 and 65535"),
        ('[proxy]\nuser = "Bad User"\n', "valid system user name"),
        ('[hub]\npublic_url = "hub.example.org"\n', "http:// or https:// URL"),
        ("[proxy]\napi_port = 81\n", "hub.port and proxy.api_port are both 81"),
        ("proxy = 3\n", "must be a [proxy] table"),
    ],
)
def test_bad_values_are_rejected_with_the_key(text, fragment):
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text)
    assert fragment in str(e.value)


def test_public_url():
    s = settings.Settings.defaults()
    assert settings.public_url(s, "head.cluster") == "http://head.cluster/"
    s = settings.parse("[proxy]\nhttp_port = 8000\n")
    assert settings.public_url(s, "head") == "http://head:8000/"
    s = settings.parse('[hub]\npublic_url = "https://hub.example.org"\n')
    assert settings.public_url(s, "head") == "https://hub.example.org/"
