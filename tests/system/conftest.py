"""Fixtures for tests that need a real systemd: Debian containers booted with systemd-nspawn.

    def test_something(container_factory):
        c = container_factory("hub")              # booted, private network (only lo)
        c.exec("systemctl is-system-running")

The rootfs tarball is built once per machine (~2 min) and cached outside the repo
(see tests/container.py); every container is destroyed at teardown.

The same tests run in release CI against the real installers (.github/workflows/release.yml),
chosen by environment variables; unset, they use what `make test` builds here:

    BAREHUB_INSTALLER=PATH           the installer under test (default: the test installer)
    BAREHUB_PREVIOUS_INSTALLER=PATH  the release test_upgrade.py upgrades from (default: this
                                     checkout's test installer, upgraded to a next one built here)
    BAREHUB_ROOTFS=PATH              a rootfs tarball (.tar.zst) with systemd to boot instead of
                                     the Debian one (scripts/ci/rootfs makes Rocky Linux 8/9 and
                                     Ubuntu 24.04 ones)
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

import container as ct

ROOTFS_ENV = "BAREHUB_ROOTFS"  # a rootfs tarball to boot instead of the Debian one

_serial = itertools.count(1)


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, cgroups); run `sudo make test`"
    missing = [t for t in ("systemd-nspawn", "debootstrap", "zstd", "nsenter") if not shutil.which(t)]
    if missing:
        return f"missing {' '.join(missing)}: apt-get install systemd-container debootstrap zstd (`make test` does)"
    if not ct._cgroup_roots():
        return "no usable cgroup hierarchy under /sys/fs/cgroup"
    return None


@pytest.fixture(scope="session")
def rootfs(request) -> Path:
    """The cached bookworm rootfs tarball (built on first use, with progress on the terminal)."""
    reason = _unusable()
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        if reason:
            print(f"\nskipping systemd-nspawn tests: {reason}")
            pytest.skip(reason)
        ct.reap_stale()
        given = os.environ.get(ROOTFS_ENV)
        if given:
            if not Path(given).is_file():
                raise pytest.UsageError(f"{ROOTFS_ENV}={given}: no such file")
            print(f"\nsystem tests boot {given} ({ROOTFS_ENV})")
            return Path(given).resolve()
        return ct.build_rootfs()


@pytest.fixture(scope="module")
def container_factory(rootfs):
    """make(name, private_network=True, tarball=None, boot_timeout=120, **Container kwargs) -> booted Container.

    Module scope, so module-scoped fixtures can use it too: containers are destroyed when the
    module's tests are done (call .destroy() to do it earlier). Names get the pid and a serial
    appended (unique per run, short enough for a hostname).
    """
    made: list[ct.Container] = []

    def make(name: str = "ct", private_network: bool = True, *, tarball: Path | None = None,
             boot_timeout: float = 120, **kwargs) -> ct.Container:
        c = ct.Container(f"{name[:20]}-{os.getpid()}-{next(_serial)}", tarball or rootfs,
                         private_network=private_network, **kwargs)
        made.append(c)
        return c.boot(boot_timeout)

    yield make
    errors = []
    for c in made:
        try:
            c.destroy()
        except Exception as e:  # noqa: BLE001 - destroy the others, then report
            errors.append(e)
    if errors:
        raise errors[0]
