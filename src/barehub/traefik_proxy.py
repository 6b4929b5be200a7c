"""The proxy class the hub uses: jupyterhub-traefik-proxy's file provider,
writing rules that the unprivileged traefik user can read.

Upstream writes the rules file through a NamedTemporaryFile, which is created
with mode 600 and owned by the hub's user, so a traefik running as another
user could never read it. Here the file gets mode 640 (group: the proxy user's
group, inherited from the rules directory's owner) before it is renamed into
place, so traefik never sees a file it cannot read.
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import toml
from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy
from jupyterhub_traefik_proxy.traefik_utils import TraefikConfigFileHandler
from traitlets import default, observe

from barehub.render import write_atomic


class GroupReadableRules(TraefikConfigFileHandler):
    def atomic_dump(self, data):
        write_atomic(Path(self.file_path), toml.dumps(data), mode=0o640)


class BarehubProxy(TraefikFileProviderProxy):
    """TraefikFileProviderProxy whose rules file is readable by the proxy's group.

    It also moves existing routes to the current entry point when it loads
    the rules: after HTTPS is switched on or off, the routes of running
    servers were written for the other entry point ("web" or "https"), and
    upstream never rewrites a route whose target is unchanged.
    """

    @default("dynamic_config")
    def _load_dynamic_config(self):
        config = super()._load_dynamic_config()
        routers = config["http"]["routers"]
        moved = 0
        for alias in config["jupyterhub"]["routes"]:
            router = routers.get(alias)
            if router is not None and router.get("entryPoints") != [self.traefik_entrypoint]:
                router["entryPoints"] = [self.traefik_entrypoint]
                moved += 1
        if moved:
            self.log.info("Moved %d route(s) to traefik entry point %r", moved, self.traefik_entrypoint)
        return config

    @default("traefik_api_hashed_password")
    def _cheap_api_hash(self):
        """bcrypt at its lowest cost for the API password.

        traefik checks the hash on every API call, and the hub makes several
        per route change: at bcrypt's default cost that is ~285 ms each. The
        password is 32 random bytes, so a slow hash adds no protection.
        """
        return bcrypt.hashpw(self.traefik_api_password.encode("utf8"), bcrypt.gensalt(rounds=4)).decode("ascii")

    @default("dynamic_config_handler")
    def _default_handler(self):
        return GroupReadableRules(self.dynamic_config_file)

    @observe("dynamic_config_file")
    def _set_dynamic_config_file(self, change):
        self.dynamic_config_handler = GroupReadableRules(self.dynamic_config_file)
