"""The hub configuration barehub owns, and the loader for jupyterhub_config.d/.

The hub is started with ``jupyterhub -f <package>/jupyterhub_config.py``; that
file only calls :func:`apply`. The base settings come first, then every
``jupyterhub_config.d/*.py`` runs in lexicographic order, so the admin's files
can override anything set here. Each file is compiled with its own path as the
file name: a traceback names the file and line that failed.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import traceback
from pathlib import Path
from typing import Any

from barehub import proxy, safefs, settings
from barehub.layout import Layout


class ConfigDError(Exception):
    """A jupyterhub_config.d file failed; ``where`` is ``path:line``."""

    def __init__(self, path: Path, line: int | None, summary: str, detail: str):
        self.path = path
        self.line = line
        self.where = f"{path}:{line}" if line else str(path)
        self.summary = summary
        self.detail = detail
        super().__init__(f"{self.where}: {summary}")


def config_d_files(layout: Layout) -> list[Path]:
    """The config.d files, in the order they run.

    As root (the gate of a root-run command, or a hub running as root), the
    directory and every file must be changeable by root only: otherwise
    barehub.safefs.UnsafePath names the path, its owner and mode, and the fix.
    """
    if not layout.config_d.is_dir():
        return []
    root = os.geteuid() == 0
    if root:
        safefs.check_trusted(layout.config_d, "jupyterhub_config.d/, whose files root runs", link_ok=True)
    files = sorted(p for p in layout.config_d.iterdir() if p.suffix == ".py" and p.is_file())
    if root:
        for p in files:
            safefs.check_trusted(p, "a jupyterhub_config.d file root runs", link_ok=True)
    return files


def _failing_line(path: Path, exc: BaseException) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno  # innermost frame inside the admin's file
    return line


def run_config_d_file(path: Path, c: Any) -> None:
    """Execute one config.d file against the config object ``c``.

    Raises ConfigDError, chained to the original exception.
    """
    try:
        _exec_file(path, c)
    except Exception as e:
        summary = f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and e.filename == str(path):
            summary = f"cannot read: {e.strerror}"
        raise ConfigDError(path, _failing_line(path, e), summary, traceback.format_exc()) from e


def _exec_file(path: Path, c: Any) -> None:
    namespace = {
        "c": c,
        "get_config": lambda: c,
        "__file__": str(path),
        "__name__": "jupyterhub_config_d",
    }
    code = compile(path.read_text(), str(path), "exec")
    exec(code, namespace)


def load_config_d(layout: Layout, c: Any, *, wrap: bool = True) -> list[Path]:
    """Run every config.d file in order.

    With wrap=False (inside the hub) the original exception propagates, so the
    hub's own traceback shows the admin's file and line, with a note naming it.
    """
    files = config_d_files(layout)
    for path in files:
        if wrap:
            run_config_d_file(path, c)
            continue
        try:
            _exec_file(path, c)
        except Exception as e:
            line = _failing_line(path, e)
            e.add_note(
                f"barehub: the error is in {path}{f':{line}' if line else ''}. "
                "Fix that file, check it with `barehub check`, then `systemctl restart jupyterhub`."
            )
            raise
    return files


def base_config(layout: Layout, c: Any, *, current: settings.Settings | None = None,
                api_password: str | None = None) -> None:
    """Set what barehub owns: state paths, the external traefik, no server cleanup.

    The gate passes the settings it checks and, before the first install has
    written it, a stand-in for the proxy's API password.
    """
    s = current if current is not None else settings.load(layout.settings_file)
    if api_password is None:  # read without following a link (root reads it too, in upgrade-db)
        api_password = safefs.read_bytes(layout.base, layout.proxy_api_password).decode().strip()

    c.JupyterHub.db_url = f"sqlite:///{layout.db_file}"
    c.JupyterHub.cookie_secret_file = str(layout.cookie_secret)
    c.JupyterHub.pid_file = str(layout.pid_file)
    # bind_url, public_url and the proxy's entry point come from one place
    # (barehub.proxy), like traefik's configuration: https when HTTPS is on.
    urls = proxy.hub_urls(layout, s)
    c.JupyterHub.bind_url = urls["bind_url"]
    c.JupyterHub.hub_bind_url = f"http://{settings.url_host(s['hub.address'])}:{s['hub.port']}"
    if "public_url" in urls:
        c.JupyterHub.public_url = urls["public_url"]
    # Stopping or restarting the hub must never stop users' servers.
    c.JupyterHub.cleanup_servers = False
    quick_exit()

    c.JupyterHub.proxy_class = "barehub.traefik_proxy.BarehubProxy"
    for trait, value in proxy.hub_proxy_settings(layout, s, api_password).items():
        setattr(c.TraefikFileProviderProxy, trait, value)


_quick_exit = False


def quick_exit() -> None:
    """Make the hub process end as soon as its cleanup is done.

    After the hub's own cleanup, the interpreter's final garbage collection walks
    every object the hub holds (users, spawners, ORM rows): 2.5 s with 300 users and
    4-5 s with 1,000 on two busy cores (benchmarks/hub_scale.py), added to every
    restart, reload and upgrade. Freezing the heap at exit makes that pass skip it;
    the memory goes back with the process anyway. Logging is flushed afterwards, by
    its own exit hook.
    """
    global _quick_exit
    if not _quick_exit:
        atexit.register(gc.freeze)
        _quick_exit = True


def apply(c: Any, base: str | Path | None) -> None:
    if not base:
        raise SystemExit(
            "BAREHUB_BASE is not set. Start the hub with `systemctl start jupyterhub`, "
            "or set BAREHUB_BASE=/opt/barehub (your base directory) in the environment."
        )
    layout = Layout.at(base)
    base_config(layout, c)
    record_applied(layout)
    load_config_d(layout, c, wrap=False)


def record_applied(layout: Layout) -> None:
    """Note what this hub takes from barehub.toml (URLs, entry point) for `barehub check`.

    `barehub check` compares it with barehub.toml to say when, after a
    change, the hub must be restarted too (not only the proxy).
    """
    s = settings.load(layout.settings_file)
    try:
        safefs.write_atomic(layout.base, layout.hub_applied,
                            json.dumps(proxy.hub_facing(layout, s), indent=1) + "\n", 0o644)
    except OSError:
        pass  # advisory only: never stop the hub for it


def applied(layout: Layout) -> dict[str, str] | None:
    try:
        return json.loads(layout.hub_applied.read_text())
    except (OSError, ValueError):
        return None
