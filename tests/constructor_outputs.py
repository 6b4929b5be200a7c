"""What constructor 3.16 writes into its --output-dir for a .sh installer, for the tests of
what reads it (scripts/release.py, `make installer`): conda-forge is not reachable here,
so the real constructor cannot run.

The shapes follow constructor's source (3.16.3): build_outputs.py names the files
(`<installer>.sha256` as `sha256sum` prints it, `lockfile.base.txt`, `pkg-list.base.txt`,
`licenses.json`), main.get_output_filename names the installer, header.sh ends the
header with `@@END_HEADER@@` and passes `--no-rc` to the embedded conda when it could run it.
The packages are made up from the specs (name, version), plus one dependency.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

ARCH = {"linux-64": "x86_64", "linux-aarch64": "aarch64", "linux-ppc64le": "ppc64le"}
NOARCH = {"jupyterhub", "jupyterhub-traefik-proxy", "jupyterhub-idle-culler", "jinja2", "batchspawner",
          "jupyterlab", "jupyterhub-systemdspawner", "barehub"}


def write_outputs(out: Path, name: str, version: str, platform: str, specs: list[str], *,
                  channel: str = "/build/channel", no_rc: bool = True, lock_platform: str | None = None) -> Path:
    """Write the installer and its build outputs; return the installer's path."""
    out.mkdir(parents=True, exist_ok=True)
    installer = out / f"{name}-{version}-Linux-{ARCH[platform]}.sh"
    header = (f"#!/bin/sh\n#\n# Created by constructor 3.16.3\n#\n# NAME:  {name}\n# VER:   {version}\n"
              f"# PLAT:  {platform}\n\nset -eu\nexport INSTALLER_NAME='{name}'\nexport INSTALLER_VER='{version}'\n"
              f"export INSTALLER_PLAT='{platform}'\n"
              f"\"$CONDA_EXEC\" install --offline --file initial-state.explicit.txt -yp \"$PREFIX\" "
              f"{'--no-rc' if no_rc else ''}\nexit 0\n@@END_HEADER@@\n")
    installer.write_bytes(header.encode() + b"\x00payload\xff" * 64)
    digest = hashlib.sha256(installer.read_bytes()).hexdigest()
    (out / f"{installer.name}.sha256").write_text(f"{digest}  {installer.name}\n")
    records = [("libzlib", "1.3.1", "hb9d3cd8_2", platform)]
    for spec in specs:
        m = re.match(r"^(\S+)\s*==\s*(\S+)", spec)
        pkg, v = m[1], m[2]
        subdir = "noarch" if pkg in NOARCH else platform
        records.append((pkg, v, "pyhd8ed1ab_0" if subdir == "noarch" else "h1234567_0", subdir))
    lines = ["# This file may be used to create an environment using:",
             "# $ conda create --name <env> --file <this file>",
             f"# installer-name: {name}", f"# installer-version: {version}", "# env-name: base",
             f"# platform: {lock_platform or platform}", "# created-by: constructor 3.16.3", "@EXPLICIT"]
    dists, licenses = [], {}
    for pkg, v, build, subdir in records:
        md5 = hashlib.md5(f"{pkg}{v}{build}".encode()).hexdigest()
        if pkg == "barehub":
            url = f"file://{channel}/noarch/{pkg}-{v}-{build}.conda"
            chan = "local"
        else:
            url = f"https://conda.anaconda.org/conda-forge/{subdir}/{pkg}-{v}-{build}.conda"
            chan = "conda-forge"
        lines.append(f"{url}#{md5}")
        dists.append(f"{chan}/{subdir}::{pkg}-{v}-{build}")
        licenses[f"{chan}/{subdir}::{pkg}-{v}-{build}"] = {
            "type": "BSD-3-Clause", "files": [{"path": f"/cache/{pkg}/info/licenses/LICENSE", "text": None}]}
    (out / "lockfile.base.txt").write_text("\n".join(lines))
    (out / "pkg-list.base.txt").write_text(f"# {name} {version}, env=base\n" + "\n".join(dists))
    (out / "licenses.json").write_text(json.dumps(licenses, indent=2))
    return installer
