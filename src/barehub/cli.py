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
from barehub import backup, envs, gate, hubconfig, proxy, safefs, settings, systemd, upgrade
from barehub.install import (Context, InstallError, check_base, created_users, install, made_by_barehub,
                             proxy_changes, render_units, write_proxy_files)
from barehub.layout import HUB_UNIT, PROXY_UNIT, Layout, NotABase


def default_base(environ: os._Environ[str] | dict[str, str], prefix: str) -> Path:
    """BAREHUB_BASE, else the base this environment lives in (BASE/envs/<v>), else /opt/barehub."""
    if environ.get("BAREHUB_BASE"):
        return Path(environ["BAREHUB_BASE"])
    p = Path(prefix)
    if p.parent.name == "envs":
        return p.parent.parent
    if p.name == "hub" and p.is_symlink():  # run as BASE/hub/bin/barehub: sys.prefix is the link
        return p.parent
    return Path("/opt/barehub")


def cmd_install(args: argparse.Namespace) -> int:
    """A first install, a repair (the active release again), or an upgrade (a newer one beside it)."""
    layout = Layout.at(args.base)
    check_base(layout)  # before anything in it is read or run
    prefix = Path(args.prefix).absolute()
    if prefix == layout.hub_link and envs.active_env(layout):
        # `hub/bin/barehub install`: sys.prefix is the link itself; use the env it names
        prefix = envs.active_env(layout)
    plan = envs.decide(layout, prefix)
    if plan.kind == "older":
        raise InstallError(envs.refusal(layout, plan, prefix))
    if plan.kind == "upgrade":
        return upgrade.upgrade(layout, prefix, plan, no_start=args.no_start)
    return install(layout.base, prefix, no_start=args.no_start)


def check(layout: Layout, out=print) -> gate.Report:
    """`barehub check`: the gate, with its warnings and what must be restarted printed to `out`."""
    report = gate.check(layout, ports=True)
    for w in report.warnings:
        out(f"warning: {w}")
    if report.ok:
        out(f"ok: {layout.settings_file} and {report.files} file(s) in {layout.config_d}/ load, and "
            "JupyterHub's start-up accepts them")
        for hint in pending(layout, report.settings):
            out(hint)
    return report


def pending(layout: Layout, s: settings.Settings) -> list[str]:
    """What must be restarted (or re-installed) for barehub.toml to take effect."""
    ctx = Context(layout, s, Path(sys.prefix))
    hints = []
    if layout.hub_unit.exists():
        units = [p.name for p, text in render_units(ctx).items() if not p.exists() or p.read_text() != text]
        if units:
            hints.append(f"note: barehub.toml changes the systemd units ({', '.join(units)}): run "
                         "`barehub install`, which re-renders them and restarts what changed")
    if layout.traefik_toml.exists():
        try:
            changed = proxy_changes(ctx)
        except OSError as e:  # a file only root may read, for a check by another user
            changed = []
            hints.append(f"note: cannot tell whether traefik's configuration is up to date ({e}); "
                         "run `barehub check` as root")
        if changed:
            names = ", ".join(str(p.relative_to(layout.base)) for p in changed)
            hints.append(f"note: barehub.toml changes traefik's configuration ({names}): apply it with "
                         "`systemctl restart jupyterhub-proxy`")
    running = hubconfig.applied(layout)
    wanted = proxy.hub_facing(layout, s)
    if running is not None and running != wanted:
        what = "; ".join(f"{k} {running.get(k, '(unset)')} -> {wanted.get(k, '(unset)')}"
                         for k in sorted(set(running) | set(wanted)) if running.get(k) != wanted.get(k))
        hints.append(f"note: the hub must follow this change ({what}): restart both, proxy first: "
                     "`systemctl restart jupyterhub-proxy jupyterhub`")
    return hints


def cmd_check(args: argparse.Namespace) -> int:
    layout = Layout.at(args.base)
    check_base(layout)
    if not layout.looks_like_base():
        print(f"error: {layout.base} is not a barehub base (no barehub.toml). Pass --base.", file=sys.stderr)
        return 2
    report = check(layout)
    for p in report.problems:
        print(f"error: {p}", file=sys.stderr)
    if not report.ok:
        print("Nothing was started or changed; a running hub is left alone. Fix what is named above, "
              "then run `barehub check` again.", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_render_proxy(args: argparse.Namespace) -> int:
    """Run by jupyterhub-proxy.service before traefik starts (as root): apply barehub.toml."""
    layout = Layout.at(args.base)
    check_base(layout)
    keep = (f"traefik keeps its last good configuration ({layout.traefik_toml}). Fix barehub.toml, "
            "check it with `barehub check`, then `systemctl restart jupyterhub-proxy`.")
    # The proxy's part of the gate: barehub.toml and the files it names (the hub's part is
    # the hub's own business; a broken config.d file must not keep traefik from starting).
    report = gate.check(layout, ports=True, hub=False)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not report.ok:
        for p in report.problems:
            print(f"error: {p}", file=sys.stderr)
        print(keep, file=sys.stderr)
        return 1
    s = report.settings
    ctx = Context(layout, s, Path(sys.prefix))
    try:
        written = write_proxy_files(ctx)
    except safefs.UnsafePath as e:
        print(f"error: {e}\n{keep}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a read-only mount in the unit's sandbox
        print(f"error: cannot write {e.filename or layout.proxy_state}: {e.strerror or e}. "
              f"render-proxy must run as root with {layout.generated}/ and {layout.proxy_state}/ writable "
              f"(jupyterhub-proxy.service binds {layout.rules_dir} and {layout.tls_dir} with BindPaths=, "
              f"not BindReadOnlyPaths=; `barehub install` re-renders the unit).\n{keep}", file=sys.stderr)
        return 1
    for path, did in written.items():
        if did:
            print(f"{'removed' if not path.exists() else 'rendered'} {path}")
    if layout.proxy_unit.exists() and layout.proxy_unit.read_text() != render_units(ctx)[layout.proxy_unit]:
        print(f"warning: barehub.toml changes {layout.proxy_unit} itself: run `barehub install` to apply that",
              file=sys.stderr)
    return 0


def cmd_stop_services(args: argparse.Namespace) -> int:
    """Run by jupyterhub.service's ExecStopPost: no managed service outlives its hub."""
    stopped = systemd.stop_managed_services()
    if stopped:
        print(f"stopped {len(stopped)} managed service process(es) the hub left behind: "
              + ", ".join(map(str, stopped)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = Layout.at(args.base)
    rows = [("barehub", barehub.__version__), ("base", str(layout.base))]
    link = layout.hub_link
    rows.append(("hub env", f"{os.readlink(link)}" if link.is_symlink() else "missing (run barehub install)"))
    try:
        s = settings.load(layout.settings_file)
        rows.append(("public URL", settings.public_url(s, socket.getfqdn())))
        mode = s["https.mode"]
        ca = s["https.acme_directory"] or "Let's Encrypt"
        detail = {"letsencrypt": f"certificates for {', '.join(s['https.domains'])} from {ca}",
                  "manual": f"certificate {s['https.certificate']}"}.get(mode, "plain HTTP only")
        rows.append(("https", f"{mode}: {detail}"))
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
    plan = []
    if systemd.is_running():
        plan.append(f"stop and disable {HUB_UNIT} and {PROXY_UNIT} (removes their links in /etc/systemd/system)")
        plan.append("stop every user server the hub started")
    plan.append(f"delete {layout.base} (configuration, state and database included)")
    # Only users that `barehub install` created (its root-only record says so, or the account
    # is exactly as it makes them) are deleted: proxy.user may name a user that was there
    # before (`daemon`, say).
    remove = []
    for name in dict.fromkeys([*created_users(layout), s["proxy.user"]]):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if name in created_users(layout) or made_by_barehub(name):
            remove.append(name)
            plan.append(f"delete system user {name} (created by barehub install)")
    kept = []
    for name in dict.fromkeys([s["proxy.user"], s["hub.user"]]):
        if name in remove or name == "root":
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        kept.append(name)
        plan.append(f"keep system user {name} (barehub did not create it; `userdel {name}` removes it)")
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
        killed = systemd.kill_leftovers(HUB_UNIT)
        systemd.systemctl("daemon-reload", check=False)
        print(f"removed units {HUB_UNIT}, {PROXY_UNIT}")
        if killed:
            print(f"stopped {len(killed)} user server process(es)")
    shutil.rmtree(layout.base)
    print(f"removed {layout.base}")
    rc = 0
    for name in remove:
        r = subprocess.run([shutil.which("userdel") or "/usr/sbin/userdel", name], capture_output=True, text=True)
        if r.returncode == 0:
            print(f"removed system user {name}")
        else:
            rc = 1
            print(f"error: could not remove system user {name}: userdel exited with {r.returncode}"
                  + (f": {r.stderr.strip()}" if r.stderr.strip() else "")
                  + f". Remove it with `userdel {name}`.", file=sys.stderr)
    for name in kept:
        print(f"kept system user {name}")
    return rc


def _base_or_error(args: argparse.Namespace) -> Layout:
    layout = Layout.at(args.base)
    check_base(layout)
    if not layout.looks_like_base():
        raise NotABase(f"{layout.base} is not a barehub base (no barehub.toml). Pass --base.")
    return layout


def cmd_versions(args: argparse.Namespace) -> int:
    layout = _base_or_error(args)
    lines = upgrade.versions_table(layout)
    if not lines:
        print(f"no environments in {layout.envs}/")
        return 1
    print("\n".join(lines))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    layout = _base_or_error(args)
    if os.geteuid() != 0 and not args.no_start:
        print("error: barehub rollback must run as root (sudo), or with --no-start.", file=sys.stderr)
        return 2
    return upgrade.rollback(layout, no_start=args.no_start)


def cmd_prune(args: argparse.Namespace) -> int:
    layout = _base_or_error(args)
    upgrade.prune(layout, args.keep)
    return 0


def cmd_env_export(args: argparse.Namespace) -> int:
    layout = Layout.at(args.base)
    env = Path(args.prefix) if args.prefix else upgrade.active_env(layout)
    if env is None:
        print(f"error: {layout.hub_link} points to no environment; pass --prefix.", file=sys.stderr)
        return 2
    text = upgrade.export(env, layout)
    if args.output and args.output != "-":
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({sum(1 for line in text.splitlines() if not line.startswith(('#', '@')))} packages)")
    else:
        sys.stdout.write(text)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    layout = _base_or_error(args)
    try:
        backup.backup(layout, args.output, args.keep)
    except PermissionError as e:
        print(f"error: cannot read {e.filename}: {e.strerror}. barehub backup must run as root (sudo).",
              file=sys.stderr)
        return 2
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    layout = _base_or_error(args)
    if os.geteuid() != 0 and not args.no_start:
        print("error: barehub restore must run as root (sudo), or with --no-start.", file=sys.stderr)
        return 2
    return backup.restore(layout, args.archive, force=args.force, no_start=args.no_start)


def build_parser(base_default: Path | None = None) -> argparse.ArgumentParser:
    """The whole command line; scripts/docs_reference.py renders docs/reference/cli.md from it."""
    if base_default is None:
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
    add("render-proxy", "re-render traefik's configuration from barehub.toml "
        "(jupyterhub-proxy.service runs it before traefik starts)").set_defaults(func=cmd_render_proxy)
    add("stop-services", "stop the managed services (e.g. the idle culler) a stopped or killed hub left "
        "behind (jupyterhub.service runs it after the hub exits)").set_defaults(func=cmd_stop_services)
    add("status", "show the version, base, unit states and public URL").set_defaults(func=cmd_status)
    add("versions", "list the installed environments (envs/<version>/) and mark the active one"
        ).set_defaults(func=cmd_versions)
    p = add("rollback", "switch back to the environment the last upgrade came from, restore the "
            "database backup it took, and restart")
    p.add_argument("--no-start", action="store_true", help="write files only; stop and start nothing")
    p.set_defaults(func=cmd_rollback)
    p = add("prune", "remove old environments, never the active one or the rollback target")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="how many of the newest to keep")
    p.set_defaults(func=cmd_prune)
    p = add("env", "the active environment")
    env_sub = p.add_subparsers(dest="env_command", required=True)
    e = env_sub.add_parser("export", help="write the active environment's exact package list (a lockfile)",
                           description="write the active environment's exact package list: conda's "
                           "@EXPLICIT format (conda env) or name==version lines (pip env)")
    e.add_argument("--base", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    e.add_argument("-o", "--output", help="file to write (default: standard output)")
    e.add_argument("--prefix", help="export this environment instead of the active one")
    e.set_defaults(func=cmd_env_export)
    p = add("backup", "write one archive (mode 600) with the database, the secrets, barehub.toml, "
            "jupyterhub_config.d/, the ACME storage and the environment's package list")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="archive to write, or a directory to write barehub-backup-<version>-<UTC time>.tar.gz "
                   "into (default: that name in the current directory)")
    p.add_argument("--keep", type=int, metavar="N",
                   help="with -o DIRECTORY: then remove all but the N newest barehub-backup-* archives there")
    p.set_defaults(func=cmd_backup)
    p = add("restore", "put a backup archive (of this release or an older one) back into an installed base: "
            "stops the hub, replaces the files, starts it again")
    p.add_argument("archive", type=Path, metavar="FILE", help="an archive written by `barehub backup`")
    p.add_argument("--force", action="store_true",
                   help="restore even though the base's database already has users (what it replaces is kept)")
    p.add_argument("--no-start", action="store_true", help="replace the files only; stop and start nothing")
    p.set_defaults(func=cmd_restore)
    p = add("uninstall", "stop and remove the services, the base and the proxy user")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_uninstall)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InstallError, NotABase, settings.SettingsError, systemd.SystemdError, upgrade.UpgradeError,
            envs.LinkError, gate.GateError, safefs.UnsafePath, backup.BackupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except hubconfig.ConfigDError as e:
        print(f"error: {e.where}: {e.summary}\n{e.detail.rstrip()}", file=sys.stderr)
        print("Fix that file, then run the command again. Nothing was changed.", file=sys.stderr)
        return 1
