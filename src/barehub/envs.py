"""The environments of a base: one per release in ``envs/<version>/``, and the
``hub`` link that names the active one.

Versions are CalVer, ``YYYY.MM.N``, compared as tuples of numbers. What an
installer run does with its prefix (a fresh install, a repair, an upgrade or
an older release) is decided here, from the active environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import barehub
from barehub.layout import Layout

_CALVER = re.compile(r"^(\d{4})\.(\d{1,2})\.(\d+)$")


class LinkError(Exception):
    pass


def norm_name(name: str) -> str:
    """A distribution name as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_version(text: str | None) -> tuple[int, ...] | None:
    m = _CALVER.match(text or "")
    return tuple(int(g) for g in m.groups()) if m else None


def site_packages(env: Path) -> list[Path]:
    return sorted(p for p in env.glob("lib/python3*/site-packages") if p.is_dir())


def env_version(env: Path) -> str | None:
    """The barehub release an environment holds: its directory name, else barehub's dist-info."""
    if parse_version(env.name):
        return env.name
    for sp in site_packages(env):
        for dist in metadata.distributions(path=[str(sp)]):
            if norm_name(dist.metadata["Name"] or "") == "barehub":
                return dist.version
    return None


def active_env(layout: Layout) -> Path | None:
    """The environment the `hub` link points at, if the link exists and the env does."""
    link = layout.hub_link
    try:
        if not link.is_symlink():
            return None
        target = Path(os.path.normpath(link.parent / os.readlink(link)))
        return target if target.is_dir() else None
    except OSError:  # an unreadable base: the checks that follow say so
        return None


def installed_envs(layout: Layout) -> list[tuple[str, Path]]:
    """(version, path) of every envs/<version>/, newest first."""
    if not layout.envs.is_dir():
        return []
    found = [(p.name, p) for p in layout.envs.iterdir() if p.is_dir() and parse_version(p.name)]
    return sorted(found, key=lambda vp: parse_version(vp[0]), reverse=True)


@dataclass
class Plan:
    """What `barehub install` does with this prefix: fresh, repair, upgrade or older."""

    kind: str
    new_version: str
    old_env: Path | None = None
    old_version: str | None = None


def decide(layout: Layout, prefix: Path, new_version: str = barehub.__version__) -> Plan:
    old = active_env(layout)
    if old is None:
        return Plan("fresh", new_version)
    old_version = env_version(old)
    plan = Plan("repair", new_version, old, old_version)
    if old.resolve() == prefix.resolve():
        return plan
    old_t, new_t = parse_version(old_version), parse_version(new_version)
    if old_t is None or new_t is None or old_t == new_t:
        return plan  # same release elsewhere, or a version we cannot compare: today's behaviour
    plan.kind = "upgrade" if new_t > old_t else "older"
    return plan


def refusal(layout: Layout, plan: Plan, prefix: Path) -> str:
    return (
        f"barehub {plan.old_version} is active ({layout.hub_link} -> {plan.old_env}); this installer is "
        f"the older {plan.new_version}. To go back, use `barehub rollback`:\n"
        f"  {layout.hub_link}/bin/barehub versions     # what is installed, and the rollback target\n"
        f"  {layout.hub_link}/bin/barehub rollback\n"
        f"Nothing was changed and barehub {plan.old_version} keeps running. The installer extracted "
        f"{prefix}, which is not used: remove it with `rm -rf {prefix}` (or `barehub prune`)."
    )


def switch_link(link: Path, target: Path) -> bool:
    """Point `link` at `target` atomically (relative when inside the base)."""
    try:
        rel = os.path.relpath(target, link.parent) if target.is_relative_to(link.parent) else str(target)
    except ValueError:
        rel = str(target)
    if link.is_symlink() and os.readlink(link) == rel:
        return False
    if link.exists() and not link.is_symlink():
        raise LinkError(f"{link} exists and is not a link. Move it away, then run the installer again.")
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(rel)
    os.replace(tmp, link)
    return True
