"""barehub.toml: the few settings the base itself owns, validated.

Everything about the hub itself (authenticator, spawner, ...) belongs in
jupyterhub_config.d/; this file only holds what barehub renders into the
systemd units and traefik's static configuration.
"""

from __future__ import annotations

import copy
import ipaddress
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
    #: for kind=list: the type every item must have
    item: type | None = None

    def accepts(self, value: Any) -> bool:
        if type(value) is not self.kind:
            return False
        if self.kind is list and self.item is not None:
            return all(type(v) is self.item for v in value)
        return True

    @property
    def type_name(self) -> str:
        if self.kind is list and self.item is not None:
            return f"list of {self.item.__name__}s, e.g. [\"a\", \"b\"]"
        return self.kind.__name__


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port between 1 and 65535"


# Every pattern here is matched with fullmatch: `$` would also accept a trailing newline,
# which would then end a line of a unit file or a TOML string early.
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def valid_user_name(value: str) -> bool:
    return bool(_USER_RE.fullmatch(value))


def _user(value: str) -> str | None:
    if valid_user_name(value):
        return None
    return ('must be a valid system user name: a lower-case letter or "_", then up to 31 lower-case letters, '
            'digits, "_" or "-"')


def ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in value ("::1", "[::1]", "10.0.0.1"), or None if it is not one."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not re.fullmatch(r"[0-9A-Fa-f:.]+", bare):  # no "%scope" (ipaddress takes any text there)
        return None
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if bare != value and addr.version != 6:
        return None  # "[10.0.0.1]" is no address
    return addr


def url_host(address: str) -> str:
    """An address as the host part of a URL or a listen address: IPv6 in brackets."""
    addr = ip_address(address)
    if addr is not None and addr.version == 6:
        return f"[{addr}]"
    return address


def _address(value: str) -> str | None:
    if value == "" or ip_address(value) is not None:
        return None
    return 'must be an IP address like "10.0.0.1" or "::1", or "" for all interfaces'


# The characters RFC 3986 allows in a URI; no quote, backslash, space or control character.
_URI_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?")


def _url_ok(value: str, schemes: tuple[str, ...]) -> bool:
    m = re.fullmatch(r"([a-z]+)://([^/?#]+)(" + _URI_CHARS + r"*)", value)
    return bool(m and m.group(1) in schemes and _HOST_RE.fullmatch(m.group(2))
                and (m.group(3) == "" or m.group(3)[0] in "/?#"))


def _url(value: str) -> str | None:
    if value == "" or _url_ok(value, ("http", "https")):
        return None
    return ('must be an http:// or https:// URL like "https://hub.example.org/" (no quotes, spaces or '
            'backslashes), or "" to derive it')


def _networks(value: list[str]) -> str | None:
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return (f"has {entry!r}, which is neither an IP address nor a network in CIDR notation "
                    'like "10.0.0.5" or "192.168.0.0/24"')
    return None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else "must be one of " + ", ".join(f'"{c}"' for c in choices)

    return check


#: The largest https.hsts_max_age: traefik reads stsSeconds as a 64-bit integer and drops the
#: whole rules directory (the hub's routes too) on a larger one. 2^31-1 s is 68 years.
HSTS_MAX = 2**31 - 1


def _hsts(value: int) -> str | None:
    if 0 <= value <= HSTS_MAX:
        return None
    return f"must be between 0 and {HSTS_MAX} seconds (one year is 31536000; 0 = no HSTS header)"


# A DNS name as ACME CAs accept it: letters, digits and hyphens, at least two labels.
_DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _domains(value: list[str]) -> str | None:
    for name in value:
        if name.startswith("*."):
            return (f"has the wildcard {name!r}: wildcard certificates need the dns-01 challenge, which "
                    "barehub does not configure; list each name instead")
        if ip_address(name) is not None or (_DOMAIN_RE.fullmatch(name) and name.rsplit(".", 1)[1].isdigit()):
            return (f"has the IP address {name!r}: barehub gets certificates for DNS names only; list the "
                    "name users reach the hub at, or use https.mode = \"manual\" with your own certificate")
        if not _DOMAIN_RE.fullmatch(name):
            return f"has {name!r}, which is not a lower-case DNS name like \"hub.example.org\""
    if len(set(value)) != len(value):
        return "lists a name twice"
    return None


_EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+")


def _email(value: str) -> str | None:
    if value == "" or _EMAIL_RE.fullmatch(value):
        return None
    return 'must be an e-mail address like "admin@example.org" (no quotes, spaces or backslashes)'


def _https_url(value: str) -> str | None:
    if value == "" or _url_ok(value, ("https",)):
        return None
    return ('must be an https:// URL like "https://acme.example.org/directory" (no quotes, spaces or '
            'backslashes), or "" for Let\'s Encrypt')


def _abs_path(value: str) -> str | None:
    if value and not value.startswith("/"):
        return "must be an absolute path (starting with /)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not hold a newline or another control character"
    return None


HTTPS_MODES = ("off", "letsencrypt", "manual")
CHALLENGES = ("tls-alpn-01", "http-01")
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: section -> key -> Key. The commented barehub.toml is rendered from this.
SCHEMA: dict[str, dict[str, Key]] = {
    "proxy": {
        "http_address": Key("", str, 'Address traefik listens on for users ("" = all interfaces).', _address),
        "http_port": Key(80, int, "Port users connect to.", _port),
        "api_port": Key(
            99, int,
            "traefik's API port; it only ever listens on 127.0.0.1, with credentials. Keep it below 1024, "
            "so that no local user can listen on it first and be sent the hub's API password.",
            _port,
        ),
        "user": Key("barehub-proxy", str, "Unprivileged system user traefik runs as (created if missing).", _user),
        "trusted_proxies": Key(
            [], list,
            "Addresses or CIDR networks of your reverse proxies in front of barehub, e.g. "
            '["10.0.0.5", "192.168.0.0/24"]: only requests from these may set X-Forwarded-For, -Proto '
            "and -Host (the client address, https, the public host name); traefik replaces those headers "
            "on every other request. Empty: nobody is trusted. See docs/behind-a-proxy.md.",
            _networks, item=str,
        ),
    },
    "hub": {
        "user": Key("root", str, "User the hub runs as. Spawners that switch users need root.", _user),
        "port": Key(
            81, int,
            "Port of the hub's own API; it listens on hub.address. Keep it below 1024, so that no local "
            "user can listen on it while the hub restarts and receive its traffic (logins included).",
            _port,
        ),
        "address": Key(
            "127.0.0.1",
            str,
            "Address the hub's API listens on. Use the head node's cluster address when "
            "user servers run on other hosts.",
            _address,
        ),
        "public_url": Key(
            "", str,
            'URL users reach the hub at ("" = derived: https://<first of https.domains> with HTTPS on, '
            "else http://<this host>:<http_port>).",
            _url,
        ),
    },
    # docs/https.md is the how-to. Keys marked "letsencrypt:" or "manual:" are
    # read only in that mode, so switching modes is a one-line edit.
    "https": {
        "mode": Key(
            "off", str,
            '"off": plain HTTP only. "letsencrypt": traefik gets and renews certificates from an ACME CA '
            '(needs email and domains). "manual": your own certificate and key (needs certificate and key).',
            _one_of(*HTTPS_MODES),
        ),
        "port": Key(443, int, "HTTPS port. With HTTPS on, proxy.http_port only redirects here (301), "
                    "except ACME http-01 challenges.", _port),
        "domains": Key(
            [], list,
            'Names users reach the hub at, e.g. ["hub.example.org"]; the first is the public URL. '
            "letsencrypt: required, one certificate covers them all.",
            _domains, item=str,
        ),
        "email": Key("", str, "letsencrypt: contact address the CA sends expiry notices to (required).", _email),
        "acme_directory": Key(
            "", str,
            f'letsencrypt: ACME directory URL ("" = Let\'s Encrypt). Try the staging CA first: {LETSENCRYPT_STAGING}',
            _https_url,
        ),
        "challenge": Key(
            "tls-alpn-01", str,
            'letsencrypt: how the CA checks the domains are yours: "tls-alpn-01" (it connects to port 443) '
            'or "http-01" (it connects to port 80).',
            _one_of(*CHALLENGES),
        ),
        "acme_ca_certificates": Key(
            "", str,
            "letsencrypt, only for a private ACME CA: PEM file with the CA certificates that its "
            "directory's HTTPS certificate chains to (Let's Encrypt needs nothing here).",
            _abs_path,
        ),
        "certificate": Key("", str, "manual: PEM file with the certificate, followed by its intermediate "
                           "certificates (copied into state/proxy/tls/ on every proxy start).", _abs_path),
        "key": Key("", str, "manual: PEM file with the certificate's private key, unencrypted.", _abs_path),
        "hsts_max_age": Key(
            31536000, int,
            "Strict-Transport-Security max-age in seconds, sent with every HTTPS response "
            "(0 = no HSTS header).",
            _hsts,
        ),
    },
    # docs/metrics.md is the how-to (the hub's own /hub/metrics needs no setting here).
    "metrics": {
        "enabled": Key(
            False, bool,
            "true: traefik serves Prometheus metrics (requests, response times and open connections "
            "per entry point, router and service) at http://<metrics.address>:<metrics.port>/metrics, "
            "without authentication.",
        ),
        "address": Key(
            "127.0.0.1", str,
            'Address the metrics listen on. Anyone who can connect reads them, and router and service '
            'names include user names: keep 127.0.0.1 unless Prometheus runs elsewhere ("" = all interfaces).',
            _address,
        ),
        "port": Key(
            82, int,
            "Port of the metrics. Keep it below 1024: only root can listen there, so no local user "
            "can take the port while traefik is stopped.",
            _port,
        ),
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
        return cls({s: {k: copy.copy(spec.default) for k, spec in keys.items()} for s, keys in SCHEMA.items()})


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
            if not spec.accepts(value):
                problems.append(
                    f"{source}: {section}.{key} = {value!r} must be a {spec.type_name} "
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


def https_on(s: Settings) -> bool:
    return s["https.mode"] != "off"


def _cross_checks(s: Settings, source: str) -> list[str]:
    ports = {"proxy.http_port": s["proxy.http_port"], "proxy.api_port": s["proxy.api_port"], "hub.port": s["hub.port"]}
    if https_on(s):
        ports["https.port"] = s["https.port"]
    if s["metrics.enabled"]:
        ports["metrics.port"] = s["metrics.port"]
    seen: dict[int, str] = {}
    out = []
    proxy_user, hub_user = s["proxy.user"], s["hub.user"]
    if proxy_user == "root":
        out.append(f'{source}: proxy.user = "root": traefik must run as an unprivileged user of its own; '
                   'remove the line (default: "barehub-proxy") or name another user')
    elif proxy_user == hub_user:
        out.append(f'{source}: proxy.user and hub.user are both "{hub_user}": traefik must not run as the hub\'s '
                   'user (it could read the hub\'s state); remove proxy.user (default: "barehub-proxy") or name '
                   'another user')
    for name, port in ports.items():
        if port in seen:
            out.append(f"{source}: {name} and {seen[port]} are both {port}; each needs its own port")
        seen.setdefault(port, name)
    mode = s["https.mode"]
    example = 'domains = ["hub.example.org"]'
    if mode == "letsencrypt":
        email, domains = s["https.email"], s["https.domains"]
        if email and not domains:
            out.append(f'{source}: https.email is set but https.domains is empty: mode "letsencrypt" needs '
                       f"the names to get a certificate for, e.g. {example}")
        elif domains and not email:
            out.append(f'{source}: https.domains is set but https.email is empty: mode "letsencrypt" needs '
                       'a contact address for the CA, e.g. email = "admin@example.org"')
        elif not email and not domains:
            out.append(f'{source}: https.mode = "letsencrypt" needs https.email and https.domains, e.g. '
                       f'email = "admin@example.org" and {example}')
    elif mode == "manual":
        missing = [k for k in ("certificate", "key") if not s[f"https.{k}"]]
        if missing:
            out.append(f'{source}: https.mode = "manual" needs ' + " and ".join(f"https.{k}" for k in missing)
                       + ' (absolute paths of PEM files), e.g. certificate = "/etc/ssl/certs/hub.pem" and '
                       'key = "/etc/ssl/private/hub.key"')
    if https_on(s) and s["hub.public_url"].startswith("http://"):
        out.append(f'{source}: hub.public_url = {s["hub.public_url"]!r} is http:// but https.mode is '
                   f'"{mode}": use the https:// URL, or "" to derive it from https.domains')
    return out


#: The ports only barehub's services listen on: a local user who binds one first gets their traffic.
INTERNAL_PORTS = ("hub.port", "proxy.api_port")


def unprivileged_port_start(proc: Path = Path("/proc")) -> int:
    """The first port any user may bind (net.ipv4.ip_unprivileged_port_start, 1024 by default)."""
    try:
        return int((proc / "sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def squattable_ports(s: Settings, first_unprivileged: int) -> list[str]:
    """Warnings for internal ports that any local user may bind (>= first_unprivileged)."""
    out = []
    for key in INTERNAL_PORTS:
        port = s[key]
        if port >= first_unprivileged:
            out.append(
                f"{key} = {port}: any local user may listen on port {port} (ports from "
                f"{first_unprivileged} up need no privilege, net.ipv4.ip_unprivileged_port_start). "
                "One who binds it first, e.g. while the service restarts, "
                + ("receives the hub's traffic, logins included"
                   if key == "hub.port" else "is sent traefik's API password by the hub")
                + f". Use a port below {min(first_unprivileged, 1024)} (default: {SCHEMA[key.split('.')[0]][key.split('.')[1]].default})"
            )
    return out


def load(path: Path) -> Settings:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise SettingsError(
            f"{path}, line {line}: not UTF-8 text (byte {e.object[e.start]:#04x} "
            f"at offset {e.start}): TOML files must be "
            "UTF-8. Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), then run `barehub check`."
        ) from None
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
    if https_on(s):
        host = s["https.domains"][0] if s["https.domains"] else hostname
        port = s["https.port"]
        return f"https://{host}/" if port == 443 else f"https://{host}:{port}/"
    port = s["proxy.http_port"]
    return f"http://{hostname}/" if port == 80 else f"http://{hostname}:{port}/"
