"""The conda recipe: build barehub offline into a local channel, install it with
a real conda installer (py-rattler) and check that it is a proper Python package.

Offline limits and how this test deals with them
-------------------------------------------------
The channel built by scripts/build_channel.py holds barehub only. Its run
requirements (python, jinja2, jupyterhub, ...) come from conda-forge, which
cannot be reached here, so no solver can produce an environment from this
channel alone: test_solve_stops_at_run_requirements checks exactly that, and
that it is barehub's own run requirements that stop it.

So the install skips the solver: it hands rattler's installer the barehub
record read from the channel's index, plus one record for `python`. The
installer needs a python record to link a `noarch: python` package (that is
where it takes the lib/pythonX.Y/site-packages path and the interpreter for
the entry point from); without one it refuses ("no python version
specified"). No conda python package can be had offline, so the test makes a
stand-in with rattler-build's assemble_package: a conda package named `python`
with the version of the interpreter running the tests, whose bin/pythonX.Y
runs that interpreter with the prefix's site-packages on sys.path. The
installer, the barehub package, its link.json, the generated bin/barehub and
the installed files are all real; only python itself is borrowed from the test
venv (which has jinja2 because barehub needs it).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipe" / "recipe.yaml"
BUILD_SCRIPT = REPO / "scripts" / "build_channel.py"
SRC = REPO / "src" / "barehub"
TEMPLATES = REPO / "templates"
PYPROJECT = REPO / "pyproject.toml"

ENTRY_POINT = "barehub = barehub.cli:main"
RUN_REQUIREMENTS = {"python", "jinja2", "jupyterhub", "jupyterhub-traefik-proxy", "traefik", "__linux"}
PY_XY = f"{sys.version_info[0]}.{sys.version_info[1]}"


# ---------------------------------------------------------------- helpers


def package_version() -> str:
    """barehub.__version__ as written in src/barehub/__init__.py."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("no __version__ in src/barehub/__init__.py")


def recipe_context_version() -> str:
    """The literal `version:` of the recipe's `context:` block, read as text
    (the way a release script or a reviewer would read it)."""
    text = RECIPE.read_text()
    block = re.search(r"^context:[ \t]*\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.M)
    assert block, "recipe.yaml has no top-level context: block"
    m = re.search(r"^[ \t]+version:[ \t]*[\"']?([^\"'\s#]+)[\"']?[ \t]*(?:#.*)?$", block.group(1), re.M)
    assert m, "recipe.yaml context: has no literal version"
    return m.group(1)


def source_files(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root, caches left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_dir() or "__pycache__" in rel.parts or p.suffix in (".pyc", ".pyo"):
            continue
        out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def run(args, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, **kw)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tools():
    try:
        import rattler
        import rattler_build
    except ImportError as exc:
        reason = (
            f"py-rattler-build/py-rattler not importable ({exc}); "
            "pip install py-rattler-build==0.73.0 py-rattler==0.28.0 (make test does)"
        )
        print(f"SKIP: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return rattler, rattler_build


@pytest.fixture(scope="session")
def channel(tools, tmp_path_factory) -> Path:
    """A fresh channel built by scripts/build_channel.py, the way `make channel` does."""
    ch = tmp_path_factory.mktemp("channel")
    proc = run([sys.executable, str(BUILD_SCRIPT), "--channel", str(ch), "-q"], cwd=REPO)
    assert proc.returncode == 0, f"build_channel.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return ch


@pytest.fixture(scope="session")
def barehub_record(tools, channel, tmp_path_factory):
    """barehub's record as a client sees it: queried through rattler's gateway."""
    rattler, _ = tools
    gateway = rattler.Gateway(cache_dir=tmp_path_factory.mktemp("repodata-cache"))
    result = asyncio.run(
        gateway.query(
            [rattler.Channel(channel.as_uri())],
            [str(rattler.Subdir.current()), "noarch"],
            ["barehub"],
            recursive=False,
        )
    )
    records = [r for subdir in result for r in subdir]
    assert len(records) == 1, f"expected one barehub package in the channel, got {records}"
    return records[0]


@pytest.fixture(scope="session")
def python_standin(tools, tmp_path_factory):
    """The stand-in `python` record (see the module docstring)."""
    rattler, rb = tools
    work = tmp_path_factory.mktemp("python-standin")
    files = work / "files"
    (files / "bin").mkdir(parents=True)
    exe = files / "bin" / f"python{PY_XY}"
    exe.write_text(
        "#!/bin/sh\n"
        "# Test stand-in for conda's python (tests/test_recipe.py): the test\n"
        "# interpreter, with this prefix's site-packages first on sys.path.\n"
        'here=$(cd "$(dirname "$0")/.." && pwd)\n'
        f'PYTHONPATH="$here/lib/python{PY_XY}/site-packages" exec {shlex.quote(sys.executable)} -s "$@"\n'
    )
    exe.chmod(0o755)
    for alias in ("python", f"python{sys.version_info[0]}"):
        (files / "bin" / alias).symlink_to(exe.name)
    out = rb.assemble_package(
        name="python",
        version="%d.%d.%d" % sys.version_info[:3],
        target_platform=str(rattler.Subdir.current()),
        build_string="barehub_test_standin_0",
        output_dir=work / "out",
        files_dir=files,
        summary="test stand-in for python (tests/test_recipe.py)",
        detect_prefix=False,
    )
    return asyncio.run(rattler.RepoDataRecord.from_package_archive(out.path))


@pytest.fixture(scope="session")
def prefix(tools, barehub_record, python_standin, tmp_path_factory) -> Path:
    """A fresh conda prefix with barehub installed by rattler's installer."""
    rattler, _ = tools
    target = tmp_path_factory.mktemp("prefix")
    asyncio.run(
        rattler.install(
            [python_standin, barehub_record],
            target_prefix=target,
            cache_dir=tmp_path_factory.mktemp("pkgs"),
            show_progress=False,
        )
    )
    return target


@pytest.fixture(scope="session")
def site_packages(prefix) -> Path:
    return prefix / "lib" / f"python{PY_XY}" / "site-packages"


@pytest.fixture(scope="session")
def prefix_record(prefix, barehub_record) -> dict:
    """barehub's conda-meta/*.json in the prefix."""
    name = f"{barehub_record.name.normalized}-{barehub_record.version}-{barehub_record.build}.json"
    path = prefix / "conda-meta" / name
    assert path.is_file(), f"{path} missing; conda-meta has {sorted(p.name for p in path.parent.iterdir())}"
    return json.loads(path.read_text())


# ---------------------------------------------------------------- tests


def test_recipe_version_is_package_version():
    assert recipe_context_version() == package_version()
    # and the package takes it from there
    assert re.search(r"^package:\n(?:[ \t]+.*\n)*?[ \t]+version:[ \t]*\$\{\{ *version *\}\}", RECIPE.read_text(), re.M)


def test_recipe_renders_version_and_entry_point(tools):
    _, rb = tools
    [variant] = rb.Stage0Recipe.from_file(RECIPE).render()
    recipe = variant.recipe.to_dict()
    assert recipe["package"]["version"] == package_version()
    assert recipe["build"]["noarch"] == "python"
    scripts = pyproject()["project"]["scripts"]
    assert recipe["build"]["python"]["entry_points"] == [f"{k} = {v}" for k, v in scripts.items()]


def test_channel_index(barehub_record):
    r = barehub_record
    assert str(r.version) == package_version()
    assert str(r.subdir) == "noarch"
    assert r.noarch.python
    assert {d.split()[0] for d in r.depends} == RUN_REQUIREMENTS
    assert "python >=3.12" in r.depends


def test_solve_stops_at_run_requirements(tools, channel, tmp_path):
    """Offline, only barehub's run requirements keep a solve from succeeding."""
    rattler, _ = tools
    from rattler.exceptions import SolverError

    linux = rattler.GenericVirtualPackage(
        rattler.PackageName("__linux"), rattler.Version("6.1"), rattler.BuildString("0")
    )
    with pytest.raises(SolverError) as exc:
        asyncio.run(
            rattler.solve(
                [rattler.Channel(channel.as_uri())],
                ["barehub"],
                gateway=rattler.Gateway(cache_dir=tmp_path),
                platforms=[str(rattler.Subdir.current()), "noarch"],
                virtual_packages=[linux],
            )
        )
    msg = str(exc.value)
    assert f"barehub {package_version()}" in msg, msg
    assert "python" in msg, msg


def test_module_installed(site_packages):
    installed = source_files(site_packages / "barehub")
    expected = source_files(SRC)
    assert {"__init__.py", "__main__.py", "cli.py"} <= expected.keys()
    module_part = {k: v for k, v in installed.items() if not k.startswith("templates/")}
    assert module_part == expected


def test_templates_installed(site_packages):
    installed = site_packages / "barehub" / "templates"
    repo_j2 = {p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.j2")}
    assert repo_j2, "templates/ has no *.j2 file"
    assert {p.relative_to(installed).as_posix() for p in installed.rglob("*.j2")} == repo_j2
    assert source_files(installed) == source_files(TEMPLATES)


def test_entry_point(prefix, prefix_record):
    link = json.loads((Path(prefix_record["extracted_package_dir"]) / "info" / "link.json").read_text())
    assert link["noarch"]["type"] == "python"
    assert link["noarch"]["entry_points"] == [ENTRY_POINT]

    script = prefix / "bin" / "barehub"
    assert script.is_file() and os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == f"#!{prefix}/bin/python{PY_XY}"
    assert "from barehub.cli import main" in lines
    # recorded, so removing the package removes the command too
    assert "bin/barehub" in prefix_record["files"]


def test_dist_info(site_packages):
    dist = site_packages / f"barehub-{package_version()}.dist-info"
    meta = (dist / "METADATA").read_text().splitlines()
    project = pyproject()["project"]
    assert "Name: barehub" in meta
    assert f"Version: {package_version()}" in meta
    assert f"Summary: {project['description']}" in meta
    assert f"Requires-Python: {project['requires-python']}" in meta
    requires = [line.split(":", 1)[1].strip() for line in meta if line.startswith("Requires-Dist:")]
    assert requires == project["dependencies"]
    assert (dist / "INSTALLER").read_text() == "conda\n"
    eps = (dist / "entry_points.txt").read_text().split()
    assert eps[0] == "[console_scripts]"
    assert " ".join(eps[1:]) == " ".join(f"{k} = {v}" for k, v in project["scripts"].items())


def test_installed_package_runs(prefix, site_packages, tmp_path):
    try:
        import jinja2  # noqa: F401
    except ImportError:
        pytest.skip("jinja2 not importable in the test interpreter, which the stand-in python runs")
    probe = (
        "import json, importlib.metadata as md, importlib.resources as res, barehub\n"
        "t = res.files('barehub') / 'templates'\n"
        "print(json.dumps({'file': barehub.__file__, 'version': barehub.__version__,"
        " 'dist': md.version('barehub'), 'templates_dir': str(t),"
        " 'j2': sorted(p.name for p in t.iterdir() if p.name.endswith('.j2'))}))\n"
    )
    proc = run([str(prefix / "bin" / "python"), "-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["file"]) == site_packages / "barehub" / "__init__.py"
    assert got["version"] == got["dist"] == package_version()
    assert Path(got["templates_dir"]) == site_packages / "barehub" / "templates"
    assert got["j2"] == sorted(p.name for p in TEMPLATES.glob("*.j2"))

    for cmd in ([str(prefix / "bin" / "barehub"), "--help"], [str(prefix / "bin" / "python"), "-m", "barehub", "--help"]):
        proc = run(cmd, cwd=tmp_path)
        assert proc.returncode == 0, f"{cmd}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "usage:" in proc.stdout.lower(), proc.stdout
