"""traefik as barehub runs it: the names both sides must agree on.

traefik's static configuration (rendered from templates/traefik.toml.j2) and
the hub's TraefikFileProviderProxy settings (set by the hidden hub config) are
both computed here, so that entry point names, the API address and the rules
location cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from barehub.layout import Layout
from barehub.settings import Settings

WEB_ENTRYPOINT = "web"
API_ENTRYPOINT = "hubapi"
API_USERNAME = "jupyterhub"


@dataclass(frozen=True)
class ProxyConfig:
    http_address: str
    http_port: int
    api_port: int
    rules_dir: str
    rules_file: str
    acme_dir: str

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def web_listen(self) -> str:
        host = self.http_address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.http_port}"


def proxy_config(layout: Layout, settings: Settings) -> ProxyConfig:
    return ProxyConfig(
        http_address=settings["proxy.http_address"],
        http_port=settings["proxy.http_port"],
        api_port=settings["proxy.api_port"],
        rules_dir=str(layout.rules_dir),
        rules_file=str(layout.rules_file),
        acme_dir=str(layout.acme_dir),
    )


def hub_proxy_settings(layout: Layout, settings: Settings, api_password: str) -> dict[str, object]:
    """Trait values for jupyterhub_traefik_proxy.TraefikFileProviderProxy."""
    p = proxy_config(layout, settings)
    return {
        "should_start": False,
        "dynamic_config_file": p.rules_file,
        "traefik_api_url": p.api_url,
        "traefik_api_username": API_USERNAME,
        "traefik_api_password": api_password,
        "traefik_entrypoint": WEB_ENTRYPOINT,
        "traefik_api_entrypoint": API_ENTRYPOINT,
    }
