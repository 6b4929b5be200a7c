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
    assert tomllib.loads(text) == {"proxy": {"http_port": 8000}, "hub": {"user": "jhub"}, "https": {}, "metrics": {}}


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
        ('[proxy]\ntrusted_proxies = "10.0.0.5"\n', "proxy.trusted_proxies = '10.0.0.5' must be a list of strs"),
        ('[proxy]\ntrusted_proxies = ["10.0.0.5", "proxy.example.org"]\n',
         "has 'proxy.example.org', which is neither an IP address nor a network in CIDR notation"),
        ('[proxy]\ntrusted_proxies = ["10.0.0.0/33"]\n', "has '10.0.0.0/33', which is neither"),
        ('[proxy]\ntrusted_proxies = ["10.0.0.5\\n"]\n', "which is neither"),
        ('[metrics]\nenabled = "yes"\n', "metrics.enabled = 'yes' must be a bool (default: False)"),
        ('[metrics]\naddress = "localhost"\n', "metrics.address = 'localhost' must be an IP address"),
        ("[metrics]\nenabled = true\nport = 81\n", "metrics.port and hub.port are both 81"),
        ("[metrics]\nenabled = true\nport = 80\n", "metrics.port and proxy.http_port are both 80"),
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


def test_metrics_port_is_checked_only_when_metrics_are_on():
    assert not settings.parse("[metrics]\nport = 8081\n")["metrics.enabled"]
    s = settings.parse('[metrics]\nenabled = true\naddress = "10.0.0.1"\n')
    assert (s["metrics.enabled"], s["metrics.address"], s["metrics.port"]) == (True, "10.0.0.1", 82)


def test_metrics_from_the_installers_environment():
    from barehub.install import InstallError, settings_from_environ

    values = settings_from_environ({"BAREHUB_METRICS_ENABLED": "true", "BAREHUB_METRICS_PORT": "9182"})
    assert values == {"metrics": {"enabled": True, "port": 9182}}
    assert settings.parse(initial_settings_text(Layout.at("/opt/b"), values))["metrics.enabled"] is True
    assert settings_from_environ({"BAREHUB_METRICS_ENABLED": "0"}) == {"metrics": {"enabled": False}}
    with pytest.raises(InstallError, match="BAREHUB_METRICS_ENABLED='yes' must be true or false"):
        settings_from_environ({"BAREHUB_METRICS_ENABLED": "yes"})


def test_a_foreign_listener_on_the_metrics_port_is_found():
    from barehub import proxy

    lay = Layout.at("/nonexistent")
    theirs = [proxy.Listener("0.0.0.0", 82, 12345, 0)]
    assert proxy.ports_in_use(lay, settings.parse(""), theirs) == [], "metrics are off by default"
    (problem,) = proxy.ports_in_use(lay, settings.parse("[metrics]\nenabled = true\n"), theirs)
    assert problem.startswith("metrics.port = 82: port 82 is already in use on 0.0.0.0")
    s = settings.parse('[metrics]\nenabled = true\naddress = "10.0.0.1"\n')
    assert proxy.ports_in_use(lay, s, [proxy.Listener("127.0.0.1", 82, 12345, 0)]) == []


def test_trusted_proxies_take_addresses_and_networks():
    assert settings.parse("")["proxy.trusted_proxies"] == []
    ok = ["10.0.0.5", "192.168.0.0/24", "2001:db8::1", "2001:db8::/32", "127.0.0.2"]
    assert settings.parse(f"[proxy]\ntrusted_proxies = {ok!r}\n".replace("'", '"'))["proxy.trusted_proxies"] == ok
