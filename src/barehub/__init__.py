"""barehub: a minimal JupyterHub distribution (hub + traefik as systemd services)."""

__version__ = "2026.11.0"
