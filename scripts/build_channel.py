#!/usr/bin/env python3
"""Build the barehub conda package offline and publish it to a local channel.

    python scripts/build_channel.py [--channel DIR] [--recipe FILE] [--keep-work]

Needs py-rattler-build 0.73.0 and py-rattler 0.28.0 (``make channel`` installs
them in build/tools-venv). No conda channel is used: recipe/recipe.yaml has no
build or host requirements, so nothing has to be solved or downloaded.

Steps: build the recipe (rattler-build also runs the recipe's offline
`package_contents` tests) in a scratch directory, replace any barehub package
in CHANNEL/noarch with the new one, index CHANNEL with rattler's index_fs, and
check that the index lists the package. Exits 0 on success, 1 on a failed
build or index, 2 when the tools are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "recipe" / "recipe.yaml"
DEFAULT_CHANNEL = REPO / "build" / "channel"
PACKAGE = "barehub"
# Subdirs written to the channel. noarch holds the package; an (empty)
# linux-64 index lets every client that asks for the platform subdir find one.
SUBDIRS = ("noarch", "linux-64")

# Run in a child interpreter: the interpreter sometimes crashes on exit after
# index_fs, so the child leaves with os._exit() once everything is flushed.
_INDEX_CHILD = """
import asyncio, os, sys, traceback
try:
    from rattler.index import index_fs
    asyncio.run(index_fs(sys.argv[1], force=True))
except BaseException:
    traceback.print_exc()
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(1)
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""


class Failure(Exception):
    """A step failed; the message says which and why."""


def say(msg: str) -> None:
    print(f"[build_channel] {msg}", flush=True)


class _Progress:
    """rattler-build progress callback: echo its log lines as they come,
    under a header each time rattler-build enters a new step (span)."""

    def __init__(self) -> None:
        self._span: str | None = None

    def on_log(self, event) -> None:  # noqa: ANN001 - rattler_build.progress.LogEvent
        span = (event.span or "").strip() or None
        if span and span != self._span:
            say(span)
        self._span = span or self._span
        level = "" if event.level == "info" else f"{event.level.upper()}: "
        for line in str(event.message).splitlines() or [""]:
            print(f"  | {level}{line}", flush=True)

    def on_build_step(self, event) -> None:  # noqa: ANN001
        say(f"step {event.step_name}: {event.message}")


def import_tools():
    try:
        import rattler  # noqa: F401
        import rattler_build
    except ImportError as exc:
        print(
            f"[build_channel] ERROR: {exc}.\n"
            "[build_channel] Install the build tools first: "
            "pip install py-rattler-build==0.73.0 py-rattler==0.28.0 (or run `make channel`).",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return rattler_build


def build(rb, recipe: Path, work: Path, verbose: bool) -> list[Path]:
    say(f"rattler-build {rb.rattler_build_version()}: building {recipe} in {work}")
    t0 = time.monotonic()
    try:
        parsed = rb.Stage0Recipe.from_file(recipe)
        results = parsed.run_build(
            # "native" runs the recipe's tests: section (package_contents only,
            # which needs no environment) right after the build.
            tool_config=rb.ToolConfiguration(test_strategy="native"),
            output_dir=work,
            # No channel: the recipe has nothing to solve. Anything that would
            # need one fails here instead of reaching for the network.
            channels=[],
            progress_callback=_Progress() if verbose else None,
        )
    except rb.RattlerBuildError as exc:
        log = work / "rattler-build-log.txt"
        hint = f" (log: {log})" if log.exists() else ""
        raise Failure(f"rattler-build failed: {exc}{hint}") from exc
    packages = [Path(p) for r in results for p in r.packages]
    for r in results:
        say(f"built {r.name} {r.version} {r.build_string} ({r.platform}) in {r.build_time:.2f}s")
    if not packages:
        raise Failure("rattler-build reported success but produced no package")
    say(f"build done in {time.monotonic() - t0:.1f}s")
    return packages


def publish(packages: list[Path], channel: Path) -> list[Path]:
    for sub in SUBDIRS:
        (channel / sub).mkdir(parents=True, exist_ok=True)
    # Drop earlier builds of barehub (any version): the channel must offer
    # exactly what the current sources build.
    for sub in SUBDIRS:
        for old in (channel / sub).iterdir():
            if old.name.startswith(f"{PACKAGE}-") and old.name.endswith((".conda", ".tar.bz2")):
                say(f"removing old {old.relative_to(channel)}")
                old.unlink()
    placed = []
    for pkg in packages:
        sub = pkg.parent.name
        if sub not in SUBDIRS:
            raise Failure(f"unexpected subdir {sub!r} for {pkg.name}")
        dest = channel / sub / pkg.name
        shutil.copy2(pkg, dest)
        say(f"copied {pkg.name} -> {dest}")
        placed.append(dest)
    return placed


def index(channel: Path, placed: list[Path]) -> None:
    say(f"indexing {channel}")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _INDEX_CHILD, str(channel)])
    if proc.returncode != 0:
        raise Failure(f"index_fs failed (exit status {proc.returncode})")
    for pkg in placed:
        repodata = pkg.parent / "repodata.json"
        try:
            data = json.loads(repodata.read_text())
        except (OSError, ValueError) as exc:
            raise Failure(f"cannot read {repodata} after indexing: {exc}") from exc
        listed = {**data.get("packages", {}), **data.get("packages.conda", {})}
        if pkg.name not in listed:
            raise Failure(f"{repodata} does not list {pkg.name}")
        rec = listed[pkg.name]
        say(f"indexed {pkg.parent.name}/{pkg.name} sha256={rec.get('sha256')}")
    try:
        (channel / ".tmp").rmdir()  # index_fs leaves this scratch directory behind
    except OSError:
        pass
    say(f"index done in {time.monotonic() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", type=Path, default=DEFAULT_CHANNEL,
                    help=f"channel directory to create or update (default: {DEFAULT_CHANNEL})")
    ap.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE,
                    help=f"recipe file (default: {DEFAULT_RECIPE})")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep rattler-build's scratch directory and print where it is")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="do not echo rattler-build's log")
    args = ap.parse_args(argv)

    recipe = args.recipe.resolve()
    channel = args.channel.resolve()
    if not recipe.is_file():
        print(f"[build_channel] ERROR: no recipe at {recipe}", file=sys.stderr)
        return 1
    rb = import_tools()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="barehub-rattler-build-"))
    ok = False
    try:
        packages = build(rb, recipe, work, verbose=not args.quiet)
        placed = publish(packages, channel)
        index(channel, placed)
        ok = True
    except Failure as exc:
        print(f"[build_channel] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if args.keep_work or not ok:
            say(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"channel ready in {time.monotonic() - t0:.1f}s: {channel.as_uri()}")
    for pkg in placed:
        print(pkg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
