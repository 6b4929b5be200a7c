"""Where things live inside a barehub base directory.

Every path is derived from the base directory that the caller passes in; nothing
here is computed at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Names of the two systemd units barehub manages.
HUB_UNIT = "jupyterhub.service"
PROXY_UNIT = "jupyterhub-proxy.service"


class NotABase(Exception):
    """The directory exists but holds something other than a barehub base."""


@dataclass(frozen=True)
class Layout:
    base: Path

    @classmethod
    def at(cls, base: str | Path) -> "Layout":
        return cls(Path(base).absolute())

    # -- admin-owned (never rewritten by barehub once they exist) --------------
    @property
    def config_d(self) -> Path:
        return self.base / "jupyterhub_config.d"

    @property
    def settings_file(self) -> Path:
        return self.base / "barehub.toml"

    # -- environments ----------------------------------------------------------
    @property
    def envs(self) -> Path:
        return self.base / "envs"

    @property
    def hub_link(self) -> Path:
        """The active conda environment: a relative link to envs/<version>."""
        return self.base / "hub"

    def env(self, version: str) -> Path:
        return self.envs / version

    # -- state (mode 0700) -----------------------------------------------------
    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def cookie_secret(self) -> Path:
        return self.state / "jupyterhub_cookie_secret"

    @property
    def proxy_api_password(self) -> Path:
        return self.state / "proxy_api_password"

    @property
    def db_file(self) -> Path:
        return self.state / "jupyterhub.sqlite"

    @property
    def pid_file(self) -> Path:
        return self.state / "jupyterhub.pid"

    @property
    def proxy_state(self) -> Path:
        """What traefik may see: its rules and its ACME storage, nothing else."""
        return self.state / "proxy"

    @property
    def rules_dir(self) -> Path:
        return self.proxy_state / "rules"

    @property
    def rules_file(self) -> Path:
        return self.rules_dir / "jupyterhub.toml"

    @property
    def tls_rules_file(self) -> Path:
        """traefik's TLS options, HSTS and manual certificates: rendered by barehub, not the hub."""
        return self.rules_dir / "barehub-tls.toml"

    @property
    def acme_dir(self) -> Path:
        return self.proxy_state / "acme"

    @property
    def acme_storage(self) -> Path:
        return self.acme_dir / "acme.json"

    @property
    def tls_dir(self) -> Path:
        """Copies of the admin's certificate, key and ACME CA bundle that traefik may read."""
        return self.proxy_state / "tls"

    @property
    def hub_applied(self) -> Path:
        """What the running hub applied (public URL, entry point), for `barehub check`."""
        return self.state / "hub_applied.json"

    # -- records only root writes ----------------------------------------------
    @property
    def records(self) -> Path:
        """What root-run commands act on later (the upgrade history, the users barehub created):
        root's, mode 755, never the hub user's."""
        return self.base / "records"

    @property
    def upgrades_file(self) -> Path:
        return self.records / "upgrades.json"

    @property
    def created_users_record(self) -> Path:
        """The system users `barehub install` created (one name a line): the only ones uninstall deletes."""
        return self.records / "created-users"

    @property
    def backups(self) -> Path:
        """The upgrade's database backups: root's, mode 700, inside state/."""
        return self.state / "backups"

    # -- generated (re-rendered on every install/upgrade) ----------------------
    @property
    def generated(self) -> Path:
        return self.base / "generated"

    @property
    def hub_unit(self) -> Path:
        return self.generated / HUB_UNIT

    @property
    def proxy_unit(self) -> Path:
        return self.generated / PROXY_UNIT

    @property
    def traefik_toml(self) -> Path:
        return self.generated / "traefik.toml"

    # -- tests and checks -------------------------------------------------------
    def looks_like_base(self) -> bool:
        return self.settings_file.is_file() or self.config_d.is_dir()

    def path_problem(self) -> str | None:
        """Why the base's path cannot be written into unit files and TOML as it is, or None.

        systemd gives a space, "%", a quote or a backslash a meaning of their own, and a
        newline ends a line: only a conservative set of characters is allowed.
        """
        text = str(self.base)
        if re.fullmatch(r"/[A-Za-z0-9._/-]*", text):
            return None
        bad = sorted({c for c in text if not re.fullmatch(r"[A-Za-z0-9._/-]", c)})
        return (f"the base directory {text!r} has characters barehub cannot write into systemd units and "
                f"traefik's configuration ({', '.join(map(repr, bad))}): choose a path of letters, digits "
                "and . _ - / only, e.g. /opt/barehub (set BAREHUB_BASE for the installer, or pass --base "
                "to `barehub install`). Nothing was changed.")

    def check_usable(self) -> None:
        """Refuse a directory that exists but is not (yet) a barehub base.

        A fresh installer run leaves only ``envs/<version>`` behind before the
        post-install hook runs, so that (or an empty directory) is fine.
        """
        if not self.base.exists():
            return
        if not self.base.is_dir():
            raise NotABase(f"{self.base} exists and is not a directory.")
        if self.looks_like_base():
            return
        foreign = sorted(p.name for p in self.base.iterdir() if p.name not in {"envs", "hub"})
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise NotABase(
                f"{self.base} exists but is not a barehub base (it has no barehub.toml "
                f"and holds: {shown}).\n"
                "Choose an empty or new directory: set BAREHUB_BASE=/path/to/new/base "
                "for the installer, or pass --base to `barehub install`."
            )
