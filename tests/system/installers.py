"""Which installer the system tests install: the test installer `make test` builds, or in
release CI the real one an environment variable names (tests/system/conftest.py lists them).

    path = installer_under_test()              # BAREHUB_INSTALLER, or the test installer
    inside = f"/root/{path.name}"              # where the tests copy it in a container
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, version

INSTALLER_ENV = "BAREHUB_INSTALLER"          # the installer under test
PREVIOUS_ENV = "BAREHUB_PREVIOUS_INSTALLER"  # the release tests/system/test_upgrade.py upgrades from
NAME = re.compile(r"^(?P<name>barehub(?:-[a-z0-9-]+?)?)-(?P<version>20\d\d\.\d+\.\d+)-Linux-(?P<arch>[a-z0-9_]+)\.sh$")
TEST_INSTALLER_DIR = REPO / "build" / "test-installer"


def given(variable: str = INSTALLER_ENV) -> Path | None:
    """The installer an environment variable names, or None when it is unset."""
    value = os.environ.get(variable)
    if not value:
        return None
    path = Path(value).resolve()
    if not path.is_file():
        raise pytest.UsageError(f"{variable}={value}: no such file")
    if not NAME.match(path.name):
        raise pytest.UsageError(f"{variable}={value}: not an installer name (barehub[-FLAVOR]-YYYY.M.N-Linux-ARCH.sh)")
    return path


def version_of(path: Path) -> str:
    return NAME.match(path.name)["version"]


def flavor_of(path: Path) -> str | None:
    name = NAME.match(path.name)["name"]
    return None if name == "barehub" else name.removeprefix("barehub-")


def installer_under_test() -> Path:
    """BAREHUB_INSTALLER, or this checkout's test installer (built by `make test-installer`)."""
    path = given()
    if path is not None:
        print(f"installer under test: {path} ({INSTALLER_ENV})")
        return path
    path = TEST_INSTALLER_DIR / f"barehub-{version()}-Linux-x86_64.sh"
    print(f"building the test installer {path.name} (make test-installer)")
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "test-installer"], check=True)
    return path


def container_path(path: Path | None = None) -> str:
    """Where the tests put the installer in a container: /root/<its name>."""
    name = path.name if path is not None else (given() or Path(f"barehub-{version()}-Linux-x86_64.sh")).name
    return f"/root/{name}"
