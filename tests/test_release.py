"""The release scripts the workflows run (.github/workflows/): scripts/release.py, scripts/bump.py,
`make version`, scripts/ci/net-trap. (scripts/ci/no-network and smoke run against the test
installer in tests/test_test_installer.py; the system tests in tests/system/.)

conda-forge is not reachable here: bump.py asks it through `conda search --json`, so the tests
give it a stand-in conda that answers in that format (conda's cli/main_search.py) from a table,
and PyPI's JSON API from a server on loopback. Copies of the repository take the writes.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bump  # noqa: E402
import lockcheck  # noqa: E402
import release  # noqa: E402
from constructor_outputs import write_outputs  # noqa: E402

VERSION = lockcheck.release_versions()["src/barehub/__init__.py"]
PINS = {p.name: p.version for p in bump.pins()}


def copy_repo(dest: Path) -> Path:
    """The repository's files (not build/, venvs or caches), for scripts that write into it."""
    def ignore(directory, names):
        top = Path(directory) == ROOT
        return {n for n in names if n in {"__pycache__", ".pytest_cache", "node_modules"}
                or (top and (n in {"build", ".git"} or n.startswith(".venv")))}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def script(repo: Path, name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(repo / "scripts" / name), *args], capture_output=True, text=True,
                          cwd=repo, timeout=120, **kwargs)


# --- CHANGELOG.md and the tag --------------------------------------------------------------

def test_changelog_is_keep_a_changelog():
    text = release.CHANGELOG.read_text()
    sections = release.changelog_sections(text)
    assert "Unreleased" in sections and sections["Unreleased"][1], "an [Unreleased] section with entries"
    for version, (date, _) in sections.items():
        if version != "Unreleased":
            assert release.section_problems(version, sections) == [], version
            assert not lockcheck.calver_problems(version) and date


def test_a_release_turns_unreleased_into_its_section_and_the_notes(tmp_path):
    changelog = tmp_path / "CHANGELOG.md"
    shutil.copy(release.CHANGELOG, changelog)
    with pytest.raises(release.ReleaseError, match=r"no section '## \[2099\.1\.0\]"):
        release.notes("2099.1.0", changelog)
    release.changelog_add("Changed", ["Pinned jupyterhub 6.1.1 -> 6.2.0 (construct/construct.yaml)."], changelog)
    release.changelog_add("Changed", ["Pinned traefik 3.7.15 -> 3.7.16 (construct/construct.yaml)."], changelog)
    release.changelog_release("2099.1.0", datetime.date(2099, 1, 10), changelog)
    sections = release.changelog_sections(changelog.read_text())
    assert sections["Unreleased"][1] == "" and sections["2099.1.0"][0] == "2099-01-10"
    notes = release.notes("2099.1.0", changelog)
    assert notes.index("### Added") < notes.index("### Changed") < notes.index("Pinned traefik")
    assert "sha256sum -c barehub-2099.1.0-Linux-x86_64.sh.sha256" in notes
    with pytest.raises(release.ReleaseError, match="nothing to release"):
        release.changelog_release("2099.1.1", datetime.date(2099, 1, 11), changelog)
    changelog.write_text(changelog.read_text().replace("### Changed", "### Misc"))
    assert any("'### Misc' is not one of" in p for p in
               release.section_problems("2099.1.0", release.changelog_sections(changelog.read_text())))


def test_check_tag_names_the_fix(tmp_path):
    r = script(ROOT, "release.py", "check-tag", "2099.1.0")
    assert r.returncode == 1
    assert f"src/barehub/__init__.py={VERSION}" in r.stderr and "make version VERSION=2099.1.0" in r.stderr
    assert "changelog-release 2099.1.0" in r.stderr
    assert "not CalVer" in script(ROOT, "release.py", "check-tag", "v2099.01.0").stderr

    repo = copy_repo(tmp_path / "repo")
    assert subprocess.run(["make", "-C", str(repo), "--no-print-directory", "version", "VERSION=2099.1.0",
                           f"SCRIPTS_PY={sys.executable}"], capture_output=True, text=True).returncode == 0
    assert script(repo, "release.py", "changelog-release", "2099.1.0").returncode == 0
    r = script(repo, "release.py", "check-tag", "2099.1.0")
    assert r.returncode == 0, r.stderr


def test_previous_release_is_the_newest_older_one():
    releases = [{"tagName": t} for t in ("2026.11.0", "2026.12.0", "2026.12.1", "2027.1.0")]
    releases += [{"tagName": "2026.12.2", "isPrerelease": True}, {"tagName": "2026.12.3", "isDraft": True},
                 {"tagName": "nightly"}]
    assert release.previous("2027.1.0", releases) == "2026.12.1"
    assert release.previous("2026.12.1", releases) == "2026.12.0"
    assert release.previous("2026.11.0", releases) is None
    r = subprocess.run([sys.executable, str(ROOT / "scripts/release.py"), "previous", "2026.10.0"],
                       input=json.dumps(releases), capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", "no earlier release: nothing printed"


# --- what constructor wrote ------------------------------------------------------------------

def base_specs(platform="linux-64"):
    return lockcheck.parse_construct(environ={"BAREHUB_CHANNEL": str(lockcheck.LOCAL_CHANNEL)},
                                     platform=platform)["specs"]


def test_check_build_accepts_what_constructor_writes(tmp_path):
    out = tmp_path / "barehub-linux-aarch64"
    write_outputs(out, "barehub", VERSION, "linux-aarch64", base_specs("linux-aarch64"))
    assert release.check_build(out, "linux-aarch64") == []


@pytest.mark.parametrize("case, expected", [
    ("no --no-rc", "does not pass --no-rc"),
    ("lockfile platform", "lockfile.base.txt is for platform 'linux-64'"),
    ("pin", "jupyterhub is 0.0.1, construct pins"),
    ("second installer", "holds other installers too"),
    ("sha256", ".sha256 does not match"),
    ("flavor package", "batchspawner is missing"),
    ("missing output", "licenses.json is missing"),
])
def test_check_build_refuses(tmp_path, case, expected):
    out = tmp_path / "out"
    specs = base_specs("linux-ppc64le")
    if case == "pin":
        specs = [s if not s.startswith("jupyterhub ") else "jupyterhub ==0.0.1" for s in specs]
    installer = write_outputs(out, "barehub-slurm" if case == "flavor package" else "barehub", VERSION,
                              "linux-ppc64le", specs, no_rc=case != "no --no-rc",
                              lock_platform="linux-64" if case == "lockfile platform" else None)
    if case == "second installer":
        write_outputs(out.with_name("other"), "barehub-slurm", VERSION, "linux-ppc64le", specs)
        shutil.copy(next(out.with_name("other").glob("*.sh")), out)
    if case == "sha256":
        installer.write_bytes(installer.read_bytes() + b"changed")
    if case == "missing output":
        (out / "licenses.json").unlink()
    problems = release.check_build(out, "linux-ppc64le", "slurm" if case == "flavor package" else None)
    assert any(expected in p for p in problems), problems


def test_assets_sbom_and_checksums(tmp_path):
    dirs = []
    for name, platform in (("barehub", "linux-64"), ("barehub-slurm", "linux-64"), ("barehub", "linux-ppc64le")):
        d = tmp_path / "artifacts" / f"installer-{name}-{platform}"
        write_outputs(d, name, VERSION, platform, base_specs(platform))
        dirs.append(d)
    out = tmp_path / "release"
    files = release.assets(out, dirs)
    names = {p.name for p in files}
    stem = f"barehub-{VERSION}-Linux-x86_64"
    assert {f"{stem}.sh", f"{stem}.sh.sha256", f"{stem}.lockfile.txt", f"{stem}.pkg-list.txt",
            f"{stem}.licenses.json", f"{stem}.cdx.json", "SHA256SUMS"} <= names
    assert f"barehub-slurm-{VERSION}-Linux-x86_64.lockfile.txt" in names
    assert f"barehub-{VERSION}-Linux-ppc64le.cdx.json" in names
    assert len(names) == 3 * 6 + 1
    r = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len((out / "SHA256SUMS").read_text().splitlines()) == 3 * 6
    doc = json.loads((out / f"{stem}.cdx.json").read_text())
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"
    jupyterhub = next(c for c in doc["components"] if c["name"] == "jupyterhub")
    assert jupyterhub["version"] == PINS["jupyterhub"]
    assert jupyterhub["purl"].startswith(f"pkg:conda/jupyterhub@{PINS['jupyterhub']}?build=")
    assert "channel=conda-forge&subdir=noarch&type=conda" in jupyterhub["purl"]
    assert jupyterhub["licenses"] == [{"license": {"name": "BSD-3-Clause"}}]
    assert jupyterhub["hashes"][0]["alg"] == "MD5"
    barehub_pkg = next(c for c in doc["components"] if c["name"] == "barehub")
    assert "channel=local" in barehub_pkg["purl"]
    assert len(doc["components"]) == len(base_specs()) + 1
    # the same installer twice (one output directory shared): refused
    with pytest.raises(release.ReleaseError, match="two build directories give"):
        release.assets(tmp_path / "again", [dirs[0], dirs[0]])


# --- bump.py -------------------------------------------------------------------------------------

FAKE_CONDA = """#!{python}
# `conda search --json --override-channels --channel conda-forge --subdir S --skip-flexible-search NAME`,
# answered from a table {{name: {{subdir: [versions]}}}}, in conda's output format.
import json, sys
args = sys.argv[1:]
assert args[:5] == ["search", "--json", "--override-channels", "--channel", "conda-forge"], args
subdir, name = args[args.index("--subdir") + 1], args[-1]
table = json.load(open({table!r}))
records = [dict(name=name, version=v, build="0", build_number=0, subdir=s, channel="conda-forge")
           for s in (subdir, "noarch") for v in table.get(name, {{}}).get(s, [])]
if not records:
    print(json.dumps(dict(exception_name="PackagesNotFoundInChannelsError", error="not found")))
    sys.exit(1)
print(json.dumps({{name: records}}))
"""


@pytest.fixture
def forge(tmp_path):
    """A stand-in conda answering from `table`, which each test fills: every pin, everywhere."""
    table = {name: {p: [version] for p in lockcheck.PLATFORMS} for name, version in PINS.items()}
    path = tmp_path / "forge.json"
    conda = tmp_path / "conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable, table=str(path)))
    conda.chmod(0o755)

    class Forge(dict):
        def save(self):
            path.write_text(json.dumps(self))
            return str(conda)

    f = Forge(table)
    f.save()
    return f


@pytest.fixture
def pypi():
    """PyPI's JSON API on loopback, from {project: {version: yanked}}."""
    projects = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.strip("/").split("/")[0]
            if name not in projects:
                self.send_response(404)
                self.end_headers()
                return
            releases = {v: [{"filename": f"{name}-{v}.tar.gz", "yanked": y}] for v, y in projects[name].items()}
            body = json.dumps({"info": {"name": name}, "releases": releases}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for pin in bump.pins():
        if pin.pypi:
            projects.setdefault(pin.pypi, {})[pin.version] = False
    yield projects, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_check_passes_when_every_pin_is_everywhere(forge):
    r = script(ROOT, "bump.py", "check", "--conda", forge.save())
    assert r.returncode == 0, r.stderr
    assert f"{len(bump.pins())} pins are on conda-forge for linux-64, linux-aarch64, linux-ppc64le" in r.stdout


def test_check_fails_naming_the_pin_the_platform_and_what_is_there(forge):
    forge["jupyterhub"]["linux-ppc64le"] = ["5.5.0"]
    forge["traefik"] = {"linux-64": ["3.7.11"], "linux-aarch64": ["3.7.11"]}
    r = script(ROOT, "bump.py", "check", "--conda", forge.save(), env={**os.environ, "GITHUB_ACTIONS": "true"})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert (f"construct/construct.yaml: jupyterhub =={PINS['jupyterhub']} is not on conda-forge for linux-ppc64le "
            "(the newest there is 5.5.0)") in lines[0]
    assert sum("traefik" in line for line in lines) == 3
    assert any("traefik" in line and "linux-ppc64le (it has no version of it at all)" in line for line in lines)
    assert f"::error::construct/construct.yaml: jupyterhub =={PINS['jupyterhub']}" in r.stdout, "a GitHub annotation"


def test_propose_takes_the_newest_version_on_all_three_platforms_and_pypi(forge, pypi):
    projects, url = pypi
    for p in lockcheck.PLATFORMS:
        forge["jupyterhub"][p] += ["6.1.2", "6.1.3", "7.0.0b1"]
    forge["jupyterhub"]["linux-ppc64le"].remove("6.1.3")     # 6.1.3: not on ppc64le
    projects["jupyterhub"].update({"6.1.2": False, "6.1.3": False, "7.0.0b1": False})
    for p in lockcheck.PLATFORMS:
        forge["jinja2"][p] += ["3.1.7"]                      # 3.1.7: conda-forge only
        forge["python"][p] += ["3.12.14", "3.13.5"]           # python: same series only
        forge["conda-standalone"][p] += ["26.7.0"]            # build tool: conda-forge only, no PyPI
    forge["batchspawner"] = {p: ["1.2.0"] for p in lockcheck.PLATFORMS}   # the pin is missing: no downgrade
    projects["batchspawner"]["1.2.0"] = False
    proposals = {p.pin.name: p for p in bump.propose(bump.CondaForge(forge.save()), bump.PyPI(url), bump.pins())}
    assert proposals["jupyterhub"].new == "6.1.2" and proposals["jupyterhub"].change
    assert "6.1.3 is not on conda-forge linux-ppc64le" in "; ".join(proposals["jupyterhub"].notes)
    assert not proposals["jinja2"].change and "3.1.7 is not on PyPI (jinja2)" in "; ".join(proposals["jinja2"].notes)
    assert proposals["python"].new == "3.12.14"
    assert proposals["conda-standalone"].new == "26.7.0"
    assert not proposals["batchspawner"].change and "a downgrade" in proposals["batchspawner"].status
    assert proposals["traefik"].status == "newest already"


def test_propose_apply_writes_every_pin_file(tmp_path, forge, pypi):
    projects, url = pypi
    repo = copy_repo(tmp_path / "repo")
    old_jh, old_bs = PINS["jupyterhub"], PINS["batchspawner"]
    for p in lockcheck.PLATFORMS:
        forge["jupyterhub"][p].append("6.9.0")
        forge["batchspawner"][p].append("1.9.0")
        forge["constructor"][p].append("3.17.0")
    projects["jupyterhub"]["6.9.0"] = False
    projects["batchspawner"]["1.9.0"] = False
    r = script(repo, "bump.py", "propose", "--conda", forge.save(), "--pypi", url, "--markdown",
               str(tmp_path / "bump.md"), "--apply", "--no-lock", "--changelog")
    assert r.returncode == 0, r.stderr
    assert f"| jupyterhub | construct/construct.yaml | {old_jh} | 6.9.0 |" in (tmp_path / "bump.md").read_text()
    assert "  - jupyterhub ==6.9.0\n" in (repo / "construct/construct.yaml").read_text()
    assert " jupyterhub==6.9.0 " in (repo / "construct/pypi.lock").read_text().split("# roots:")[1].split("\n")[0] + " "
    assert "  - batchspawner ==1.9.0\n" in (repo / "flavors/slurm.yaml").read_text()
    assert "batchspawner==1.9.0" in (repo / "flavors/slurm.pypi.lock").read_text()
    assert "constructor ==3.17.0\n" in (repo / "construct/build-tools.txt").read_text()
    assert f"- Pinned jupyterhub {old_jh} -> 6.9.0 (construct/construct.yaml)." in (repo / "CHANGELOG.md").read_text()
    # without `make lock` the locks still hold the old versions: the checks say so
    r = script(repo, "lockcheck.py")
    assert r.returncode == 1 and f"construct.yaml pins 6.9.0, the lock has jupyterhub=={old_jh}" in r.stderr
    assert old_bs in (repo / "flavors/slurm.pypi.lock").read_text().split("# roots:")[1]


def test_next_version_follows_the_month_and_the_tags(tmp_path):
    day = datetime.date(2027, 3, 10)
    assert bump.next_version(day, []) == "2027.3.0"
    assert bump.next_version(day, ["2027.2.0", "2027.3.0", "2027.3.1", "2026.3.7"]) == "2027.3.2"
    tags = tmp_path / "tags"
    tags.write_text("2027.3.0\n")
    r = script(ROOT, "bump.py", "next-version", "--date", "2027-03-10", "--tags", str(tags))
    assert r.stdout.strip() == "2027.3.1"


def test_without_conda_bump_says_where_it_works(tmp_path):
    r = script(ROOT, "bump.py", "check", env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert r.returncode == 1 and "conda is not on PATH" in r.stderr and "release CI" in r.stderr


# --- make version ----------------------------------------------------------------------------------

def test_make_version_sets_it_everywhere_on_a_copy(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    before = {rel: (ROOT / rel).read_text() for rel in bump.version_files()}
    make = ["make", "-C", str(repo), "--no-print-directory", "version", f"SCRIPTS_PY={sys.executable}"]
    r = subprocess.run(make, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make version VERSION=YYYY.MM.N" in r.stderr
    r = subprocess.run([*make, "VERSION=2027.03.0"], capture_output=True, text=True)
    assert r.returncode != 0 and "not CalVer" in r.stderr
    r = subprocess.run([*make, "VERSION=2027.3.0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # tests/test_versions.py's check, in the copy: the same version everywhere
    r = subprocess.run([sys.executable, "-c", "import lockcheck, json; print(json.dumps(lockcheck.release_versions()))"],
                       cwd=repo / "scripts", capture_output=True, text=True)
    assert set(json.loads(r.stdout).values()) == {"2027.3.0"}, r.stdout + r.stderr
    assert script(repo, "lockcheck.py").returncode == 0
    readme = (repo / "README.md").read_text()
    assert "sudo bash barehub-2027.3.0-Linux-x86_64.sh -b" in readme and f"barehub-{VERSION}-Linux" not in readme
    assert {rel: (ROOT / rel).read_text() for rel in before} == before, "the checkout itself is unchanged"


# --- scripts/ci/net-trap ---------------------------------------------------------------------------

def test_net_trap_counts_what_tries_to_leave_a_namespace_without_network():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a network namespace of its own)")
    trap = ROOT / "scripts" / "ci" / "net-trap"
    quiet = subprocess.run(["unshare", "--net", "--", "sh", "-c", f"{trap} arm && sleep 1 && {trap} check"],
                           capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    tries = subprocess.run(["unshare", "--net", "--", "sh", "-c",
                            f"{trap} arm && timeout 2 bash -c 'exec 3<>/dev/tcp/192.0.2.1/80'; {trap} check"],
                           capture_output=True, text=True)
    assert tries.returncode == 3 and "tried to leave for the network" in tries.stderr, tries.stdout + tries.stderr
    not_armed = subprocess.run(["unshare", "--net", "--", str(trap), "check"], capture_output=True, text=True)
    assert not_armed.returncode == 2
    # a namespace with another interface is refused: the trap would prove nothing there
    other = subprocess.run(["unshare", "--net", "--", "sh", "-c",
                            f"ip link add eth9 type veth peer name eth8 && {trap} arm"], capture_output=True, text=True)
    assert other.returncode == 2 and "interfaces besides lo (eth8 eth9 )" in other.stderr, other.stderr


def test_readme_quick_start_downloads_verifies_then_installs():
    text = (ROOT / "README.md").read_text()
    verify = f"sha256sum -c barehub-{VERSION}-Linux-x86_64.sh.sha256"
    install = f"sudo bash barehub-{VERSION}-Linux-x86_64.sh -b"
    assert verify in text and install in text and text.index(verify) < text.index(install)
