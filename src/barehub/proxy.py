"""traefik as barehub runs it: the names both sides must agree on.

traefik's static configuration (rendered from templates/traefik.toml.j2), its
TLS file in the rules directory (templates/traefik-tls.toml.j2) and the hub's
TraefikFileProviderProxy and URL settings (set by the hidden hub config) are
all computed here, so that entry point names, the API address, the rules
location and the public URL cannot drift apart.
"""

from __future__ import annotations

import hashlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from barehub import settings as settings_mod
from barehub.layout import Layout
from barehub.settings import Settings

WEB_ENTRYPOINT = "web"
HTTPS_ENTRYPOINT = "https"
API_ENTRYPOINT = "hubapi"
METRICS_ENTRYPOINT = "metrics"
API_USERNAME = "jupyterhub"
HSTS_MIDDLEWARE = "barehub-hsts"
#: Names of the copies traefik reads, inside Layout.tls_dir.
TLS_CERT, TLS_KEY, TLS_ACME_CA = "certificate.pem", "key.pem", "acme-ca.pem"

#: TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are not
#: configurable in Go and are all modern). ECDSA and RSA certificates both work.
CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
CURVES = ("X25519", "CurveP256", "CurveP384")


def _listen(address: str, port: int) -> str:
    return f"{settings_mod.url_host(address)}:{port}"


@dataclass(frozen=True)
class ProxyConfig:
    http_address: str
    http_port: int
    api_port: int
    rules_dir: str
    rules_file: str
    acme_dir: str
    # HTTPS ("off", "letsencrypt", "manual") and what each mode needs
    https_mode: str = "off"
    https_port: int = 443
    domains: tuple[str, ...] = ()
    email: str = ""
    acme_directory: str = ""
    challenge: str = "tls-alpn-01"
    hsts_max_age: int = 0
    acme_storage: str = ""
    tls_dir: str = ""
    tls_rules_file: str = ""
    acme_ca_certificates: str = ""
    # reverse proxies whose X-Forwarded-* headers traefik passes on (proxy.trusted_proxies)
    trusted_proxies: tuple[str, ...] = ()
    # traefik's Prometheus metrics on their own entry point ([metrics] in barehub.toml)
    metrics: bool = False
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 82

    @property
    def metrics_listen(self) -> str:
        return _listen(self.metrics_address, self.metrics_port)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def web_listen(self) -> str:
        return _listen(self.http_address, self.http_port)

    @property
    def https(self) -> bool:
        return self.https_mode != "off"

    @property
    def letsencrypt(self) -> bool:
        return self.https_mode == "letsencrypt"

    @property
    def manual(self) -> bool:
        return self.https_mode == "manual"

    @property
    def https_listen(self) -> str:
        return _listen(self.http_address, self.https_port)

    @property
    def entrypoint(self) -> str:
        """The entry point users' routes are on: the hub's traefik_entrypoint."""
        return HTTPS_ENTRYPOINT if self.https else WEB_ENTRYPOINT

    @property
    def ca_server(self) -> str:
        return self.acme_directory or settings_mod.LETSENCRYPT

    @property
    def resolver(self) -> str:
        """One certificate resolver name per ACME directory.

        traefik keeps certificates per resolver in acme.json and reuses them
        while they are valid; with one name for every CA, a staging
        certificate would still be served after switching to production.
        These names are keys in the stored acme.json: renaming them in a
        release would make every upgraded base order new certificates.
        """
        if not self.acme_directory or self.acme_directory == settings_mod.LETSENCRYPT:
            return "letsencrypt"
        if self.acme_directory == settings_mod.LETSENCRYPT_STAGING:
            return "letsencrypt-staging"
        return "acme-" + hashlib.sha256(self.acme_directory.encode()).hexdigest()[:10]

    @property
    def cert_file(self) -> str:
        return str(Path(self.tls_dir) / TLS_CERT)

    @property
    def key_file(self) -> str:
        return str(Path(self.tls_dir) / TLS_KEY)

    @property
    def acme_ca_file(self) -> str:
        return str(Path(self.tls_dir) / TLS_ACME_CA) if self.acme_ca_certificates else ""

    @property
    def hsts_middleware(self) -> str:
        """Reference to the HSTS middleware in barehub's TLS file, or "" without HSTS."""
        return f"{HSTS_MIDDLEWARE}@file" if self.https and self.hsts_max_age > 0 else ""


def proxy_config(layout: Layout, settings: Settings) -> ProxyConfig:
    s = settings
    return ProxyConfig(
        http_address=s["proxy.http_address"],
        http_port=s["proxy.http_port"],
        api_port=s["proxy.api_port"],
        rules_dir=str(layout.rules_dir),
        rules_file=str(layout.rules_file),
        acme_dir=str(layout.acme_dir),
        https_mode=s["https.mode"],
        https_port=s["https.port"],
        domains=tuple(s["https.domains"]),
        email=s["https.email"],
        acme_directory=s["https.acme_directory"],
        challenge=s["https.challenge"],
        hsts_max_age=s["https.hsts_max_age"],
        acme_storage=str(layout.acme_storage),
        tls_dir=str(layout.tls_dir),
        tls_rules_file=str(layout.tls_rules_file),
        acme_ca_certificates=s["https.acme_ca_certificates"],
        trusted_proxies=tuple(s["proxy.trusted_proxies"]),
        metrics=s["metrics.enabled"],
        metrics_address=s["metrics.address"],
        metrics_port=s["metrics.port"],
    )


def hub_urls(layout: Layout, settings: Settings) -> dict[str, str]:
    """JupyterHub's bind_url and, when known, public_url.

    With HTTPS on, both are https: bind_url is where traefik's HTTPS entry
    point listens, and public_url comes from hub.public_url or the first of
    https.domains.
    """
    p = proxy_config(layout, settings)
    urls = {"bind_url": f"https://{p.https_listen}" if p.https else f"http://{p.web_listen}"}
    if settings["hub.public_url"]:
        urls["public_url"] = settings["hub.public_url"]
    elif p.https and p.domains:
        urls["public_url"] = settings_mod.public_url(settings, p.domains[0])
    return urls


def hub_proxy_settings(layout: Layout, settings: Settings, api_password: str) -> dict[str, object]:
    """Trait values for jupyterhub_traefik_proxy.TraefikFileProviderProxy."""
    p = proxy_config(layout, settings)
    return {
        "should_start": False,
        "dynamic_config_file": p.rules_file,
        "traefik_api_url": p.api_url,
        "traefik_api_username": API_USERNAME,
        "traefik_api_password": api_password,
        "traefik_entrypoint": p.entrypoint,
        "traefik_api_entrypoint": API_ENTRYPOINT,
    }


def hub_facing(layout: Layout, settings: Settings) -> dict[str, str]:
    """What the hub takes from barehub.toml that must match the proxy: recorded at hub start."""
    return {"traefik_entrypoint": proxy_config(layout, settings).entrypoint, **hub_urls(layout, settings)}


# ------------------------------------------------------------------ ports in use

@dataclass(frozen=True)
class Listener:
    address: str  # "0.0.0.0", "::", "127.0.0.1", ...
    port: int
    uid: int
    inode: int


def _hex_address(text: str) -> str:
    import ipaddress

    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def tcp_listeners(proc: Path = Path("/proc/net")) -> list[Listener]:
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":  # 0A: LISTEN
                continue
            host, port = f[1].rsplit(":", 1)
            out.append(Listener(_hex_address(host), int(port, 16), int(f[7]), int(f[9])))
    return out


def _overlaps(ours: str, theirs: str) -> bool:
    wildcard = {"", "0.0.0.0", "::"}
    addr = settings_mod.ip_address(ours)
    ours = str(addr) if addr is not None else ours.strip("[]")  # "[0::1]" is "::1" in /proc/net
    return ours in wildcard or theirs in wildcard or ours == theirs or (ours == "localhost" and theirs in {"127.0.0.1", "::1"})


def _owner(inode: int) -> tuple[str, list[str]]:
    """('name (pid N)', argv) of the process holding a socket, when /proc lets us see it."""
    target = f"socket:[{inode}]"
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return "", []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                    return f"{comm} (pid {pid})", argv
        except OSError:
            continue
    return "", []


def ports_in_use(layout: Layout, settings: Settings, listeners: list[Listener] | None = None) -> list[str]:
    """The proxy's ports that something other than barehub's traefik listens on.

    traefik runs as the proxy user, so a listener owned by that user is ours
    (running, or being restarted); so is a traefik started with this base's
    traefik.toml (as another user, e.g. before a change of proxy.user is
    installed). Read from /proc/net, which also works inside the hub's
    sandbox, where other users' processes are invisible.
    """
    p = proxy_config(layout, settings)
    wanted = {"proxy.http_port": (p.http_address, p.http_port), "proxy.api_port": ("127.0.0.1", p.api_port)}
    if p.https:
        wanted["https.port"] = (p.http_address, p.https_port)
    if p.metrics:
        wanted["metrics.port"] = (p.metrics_address, p.metrics_port)
    try:
        proxy_uid: int | None = pwd.getpwnam(settings["proxy.user"]).pw_uid
    except KeyError:
        proxy_uid = None
    listeners = tcp_listeners() if listeners is None else listeners
    problems = []
    for key, (address, port) in wanted.items():
        for sock in listeners:
            if sock.port != port or not _overlaps(address, sock.address) or sock.uid == proxy_uid:
                continue
            who, argv = _owner(sock.inode)
            if any(layout.traefik_toml.name in a and str(layout.traefik_toml) in a for a in argv):
                continue
            try:
                user = pwd.getpwuid(sock.uid).pw_name
            except KeyError:
                user = f"uid {sock.uid}"
            who = f"{who}, user {user}" if who else f"user {user}"
            problems.append(
                f"{key} = {port}: port {port} is already in use on {sock.address} by {who}. "
                f"Stop that service, or choose another port for {key} in barehub.toml"
            )
            break
    return problems
