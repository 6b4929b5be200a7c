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

import toml
from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy
from jupyterhub_traefik_proxy.traefik_utils import TraefikConfigFileHandler
from traitlets import default, observe

from barehub.render import write_atomic


class GroupReadableRules(TraefikConfigFileHandler):
    def atomic_dump(self, data):
        write_atomic(Path(self.file_path), toml.dumps(data), mode=0o640)


class BarehubProxy(TraefikFileProviderProxy):
    """TraefikFileProviderProxy whose rules file is readable by the proxy's group."""

    @default("dynamic_config_handler")
    def _default_handler(self):
        return GroupReadableRules(self.dynamic_config_file)

    @observe("dynamic_config_file")
    def _set_dynamic_config_file(self, change):
        self.dynamic_config_handler = GroupReadableRules(self.dynamic_config_file)
