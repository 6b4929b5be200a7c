"""barehub.toml: the few settings the base itself owns, validated.

Everything about the hub itself (authenticator, spawner, ...) belongs in
jupyterhub_config.d/; this file only holds what barehub renders into the
systemd units and traefik's static configuration.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class SettingsError(Exception):
    """barehub.toml is unreadable or invalid; the message names file and key."""


@dataclass(frozen=True)
class Key:
    default: Any
    kind: type
    doc: str
    check: Callable[[Any], str | None] | None = None


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port between 1 and 65535"


_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _user(value: str) -> str | None:
    return None if _USER_RE.match(value) else "must be a valid system user name"


def _address(value: str) -> str | None:
    if value == "" or re.match(r"^[0-9a-fA-F.:\[\]]+$", value):
        return None
    return 'must be an IP address, or "" for all interfaces'


def _url(value: str) -> str | None:
    if value == "" or re.match(r"^https?://[^/\s]+(/.*)?$", value):
        return None
    return 'must be an http:// or https:// URL, or "" to derive it'


#: section -> key -> Key. The commented barehub.toml is rendered from this.
SCHEMA: dict[str, dict[str, Key]] = {
    "proxy": {
        "http_address": Key("", str, 'Address traefik listens on for users ("" = all interfaces).', _address),
        "http_port": Key(80, int, "Port users connect to.", _port),
        "api_port": Key(8099, int, "traefik's API port; it only ever listens on 127.0.0.1, with credentials.", _port),
        "user": Key("barehub-proxy", str, "Unprivileged system user traefik runs as (created if missing).", _user),
    },
    "hub": {
        "user": Key("root", str, "User the hub runs as. Spawners that switch users need root.", _user),
        "port": Key(8081, int, "Port of the hub's own API; it listens on hub.address.", _port),
        "address": Key(
            "127.0.0.1",
            str,
            "Address the hub's API listens on. Use the head node's cluster address when "
            "user servers run on other hosts.",
            _address,
        ),
        "public_url": Key("", str, 'URL users reach the hub at ("" = http://<this host>:<http_port>).', _url),
    },
}


@dataclass(frozen=True)
class Settings:
    values: dict[str, dict[str, Any]]

    def __getitem__(self, dotted: str) -> Any:
        section, key = dotted.split(".")
        return self.values[section][key]

    @classmethod
    def defaults(cls) -> "Settings":
        return cls({s: {k: spec.default for k, spec in keys.items()} for s, keys in SCHEMA.items()})


def parse(text: str, source: str = "barehub.toml") -> Settings:
    """Validate the text of a barehub.toml; raise SettingsError naming the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{source}: invalid TOML: {e}.\nFix the syntax, then run `barehub check`.") from None
    values = Settings.defaults().values
    problems = []
    for section, table in data.items():
        if section not in SCHEMA:
            problems.append(
                f"{source}: unknown section [{section}] (known sections: "
                + ", ".join(f"[{s}]" for s in SCHEMA)
                + ")"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{source}: {section} must be a [{section}] table")
            continue
        for key, value in table.items():
            spec = SCHEMA[section].get(key)
            if spec is None:
                problems.append(
                    f"{source}: unknown key {section}.{key} (known keys in [{section}]: "
                    + ", ".join(SCHEMA[section])
                    + ")"
                )
                continue
            if type(value) is not spec.kind:
                problems.append(
                    f"{source}: {section}.{key} = {value!r} must be a {spec.kind.__name__} "
                    f"(default: {spec.default!r})"
                )
                continue
            msg = spec.check(value) if spec.check else None
            if msg:
                problems.append(f"{source}: {section}.{key} = {value!r} {msg}")
                continue
            values[section][key] = value
    settings = Settings(values)
    if not problems:
        problems.extend(_cross_checks(settings, source))
    if problems:
        raise SettingsError("\n".join(problems) + "\nEdit the file, then run `barehub check`.")
    return settings


def _cross_checks(s: Settings, source: str) -> list[str]:
    ports = {"proxy.http_port": s["proxy.http_port"], "proxy.api_port": s["proxy.api_port"], "hub.port": s["hub.port"]}
    seen: dict[int, str] = {}
    out = []
    for name, port in ports.items():
        if port in seen:
            out.append(f"{source}: {name} and {seen[port]} are both {port}; each needs its own port")
        seen.setdefault(port, name)
    return out


def load(path: Path) -> Settings:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(
            f"{path} is missing. Run `barehub install --base {path.parent}` to create it with defaults."
        ) from None
    except OSError as e:
        raise SettingsError(f"{path}: cannot read: {e.strerror}") from None
    return parse(text, str(path))


def public_url(s: Settings, hostname: str) -> str:
    if s["hub.public_url"]:
        return s["hub.public_url"].rstrip("/") + "/"
    port = s["proxy.http_port"]
    return f"http://{hostname}/" if port == 80 else f"http://{hostname}:{port}/"
