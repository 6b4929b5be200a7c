"""The `barehub` command."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import barehub
from barehub import hubconfig, settings, systemd
from barehub.install import InstallError, install
from barehub.layout import HUB_UNIT, PROXY_UNIT, Layout, NotABase


def default_base(environ: os._Environ[str] | dict[str, str], prefix: str) -> Path:
    """BAREHUB_BASE, else the base this environment lives in (BASE/envs/<v>), else /opt/barehub."""
    if environ.get("BAREHUB_BASE"):
        return Path(environ["BAREHUB_BASE"])
    p = Path(prefix)
    if p.parent.name == "envs":
        return p.parent.parent
    return Path("/opt/barehub")


def cmd_install(args: argparse.Namespace) -> int:
    return install(args.base, Path(args.prefix), no_start=args.no_start)


def check(layout: Layout, out=print) -> list[str]:
    """Validate barehub.toml and load every config.d file; return the problems found."""
    from traitlets.config import Config

    problems = []
    try:
        settings.load(layout.settings_file)
    except settings.SettingsError as e:
        problems.append(str(e))
    c = Config()
    if not problems and layout.proxy_api_password.exists():
        hubconfig.base_config(layout, c)
    files = hubconfig.config_d_files(layout)
    for path in files:
        try:
            hubconfig.run_config_d_file(path, c)
        except hubconfig.ConfigDError as e:
            problems.append(f"{e.where}: {e.summary}\n{e.detail.rstrip()}")
            break  # later files may depend on this one
    if not problems:
        out(f"ok: {layout.settings_file} and {len(files)} file(s) in {layout.config_d}/ load without errors")
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    layout = Layout.at(args.base)
    if not layout.looks_like_base():
        print(f"error: {layout.base} is not a barehub base (no barehub.toml). Pass --base.", file=sys.stderr)
        return 2
    problems = check(layout)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        print("Fix the file named above, then run `barehub check` again.", file=sys.stderr)
    return 1 if problems else 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = Layout.at(args.base)
    rows = [("barehub", barehub.__version__), ("base", str(layout.base))]
    link = layout.hub_link
    rows.append(("hub env", f"{os.readlink(link)}" if link.is_symlink() else "missing (run barehub install)"))
    try:
        s = settings.load(layout.settings_file)
        rows.append(("public URL", settings.public_url(s, socket.getfqdn())))
    except settings.SettingsError as e:
        rows.append(("settings", f"INVALID: {e}"))
    if systemd.is_running():
        for unit in (HUB_UNIT, PROXY_UNIT):
            enabled, active = systemd.unit_state(unit)
            rows.append((unit, f"{active} ({enabled})"))
    else:
        rows.append(("services", "systemd is not running here: unit states unknown"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    layout = Layout.at(args.base)
    if os.geteuid() != 0:
        print("error: barehub uninstall must run as root (sudo).", file=sys.stderr)
        return 2
    if not layout.looks_like_base():
        print(f"error: {layout.base} is not a barehub base; nothing removed.", file=sys.stderr)
        return 2
    s = settings.load(layout.settings_file) if layout.settings_file.exists() else settings.Settings.defaults()
    proxy_user = s["proxy.user"]
    plan = []
    if systemd.is_running():
        plan.append(f"stop and disable {HUB_UNIT} and {PROXY_UNIT} (removes their links in /etc/systemd/system)")
    plan.append(f"delete {layout.base} (configuration, state and database included)")
    try:
        pwd.getpwnam(proxy_user)
        plan.append(f"delete system user {proxy_user}")
    except KeyError:
        proxy_user = ""
    print("barehub uninstall will:\n" + "\n".join(f"  - {p}" for p in plan))
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: pass --yes to confirm when not running interactively.", file=sys.stderr)
            return 2
        if input("Proceed? [y/N] ").strip().lower() not in {"y", "yes"}:
            print("nothing removed")
            return 1
    if systemd.is_running():
        systemd.systemctl("disable", "--now", HUB_UNIT, PROXY_UNIT, check=False)
        systemd.systemctl("daemon-reload", check=False)
        print(f"removed units {HUB_UNIT}, {PROXY_UNIT}")
    shutil.rmtree(layout.base)
    print(f"removed {layout.base}")
    if proxy_user:
        subprocess.run([shutil.which("userdel") or "/usr/sbin/userdel", proxy_user], check=False)
        print(f"removed system user {proxy_user}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    base_default = default_base(os.environ, sys.prefix)
    parser = argparse.ArgumentParser(prog="barehub", description="Manage a barehub JupyterHub base.")
    parser.add_argument("--version", action="version", version=f"barehub {barehub.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--base", type=Path, default=base_default,
                       help=f"base directory (default: $BAREHUB_BASE or {base_default})")
        return p

    p = add("install", "create or repair the base, render generated files, start the services")
    p.add_argument("--prefix", default=sys.prefix, help="environment the base runs (default: this one)")
    p.add_argument("--no-start", action="store_true", help="write files only; start nothing")
    p.set_defaults(func=cmd_install)
    add("check", "validate barehub.toml and load jupyterhub_config.d/ without starting anything").set_defaults(func=cmd_check)
    add("status", "show the version, base, unit states and public URL").set_defaults(func=cmd_status)
    p = add("uninstall", "stop and remove the services, the base and the proxy user")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_uninstall)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InstallError, NotABase, settings.SettingsError, systemd.SystemdError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except hubconfig.ConfigDError as e:
        print(f"error: {e.where}: {e.summary}\n{e.detail.rstrip()}", file=sys.stderr)
        print("Fix that file, then run the command again. Nothing was changed.", file=sys.stderr)
        return 1
