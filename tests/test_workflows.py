"""The GitHub Actions workflows (.github/workflows/*.yml), checked as far as they can be here.

They cannot run here (no GitHub runner, no conda-forge). What can be checked is:
actionlint on every workflow; shellcheck on every `run:` step; every `make` target,
repository file and `scripts/*.py` subcommand a step calls exists; every action is
pinned to a commit. The scripts the steps run are tested on their own (tests/test_release.py,
tests/test_test_installer.py, tests/system/). Each checker is also shown to catch a
broken workflow, so a pass means something.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import lockcheck  # noqa: E402

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# Where a workflow runs the repository's own files from.
REPO_PATH = re.compile(r"(?<![\w./$-])((?:scripts|tests|construct|flavors|\.github)/[\w./*-]*[\w*])")
EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(found).exists():
        pytest.fail("actionlint is missing: `make test-deps` installs it (tests/requirements.txt)")
    return found


def load(path: Path) -> dict:
    return lockcheck.load_yaml(path.read_text())


def run_steps(workflow: dict):
    """(job id, step name, shell, script) of every `run:` step."""
    default = ((workflow.get("defaults") or {}).get("run") or {}).get("shell", "bash")
    for job_id, job in (workflow.get("jobs") or {}).items():
        job_shell = ((job.get("defaults") or {}).get("run") or {}).get("shell", default)
        for n, step in enumerate(job.get("steps") or [], 1):
            if "run" in step:
                yield job_id, step.get("name") or f"step {n}", step.get("shell", job_shell), step["run"]


def shellcheck_problems(workflow: dict) -> list[str]:
    """shellcheck on each run: script, as GitHub runs it (bash -e, `${{ }}` replaced first)."""
    problems = []
    for job_id, name, shell, script in run_steps(workflow):
        if not shell.startswith("bash"):
            problems.append(f"{job_id} / {name}: shell {shell!r}: the workflows use bash only")
            continue
        # GitHub substitutes expressions before the shell sees the script: a placeholder word
        text = "#!/bin/bash\nset -eo pipefail\n" + EXPR.sub("GITHUB_EXPRESSION", script)
        r = subprocess.run(["shellcheck", "--severity=style", "--shell=bash", "--format=gcc", "-"],
                           input=text, capture_output=True, text=True)
        if r.returncode:
            problems.append(f"{job_id} / {name}:\n{r.stdout.strip()}")
    return problems


def make_targets() -> set[str]:
    """Every target of the Makefile, from make's own database."""
    r = subprocess.run(["make", "-C", str(ROOT), "-pRrq", ":"], capture_output=True, text=True)
    targets = set()
    for line in r.stdout.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if match:
            targets.add(match[1])
    return targets


def called(workflow: dict) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """(make targets, repository paths, (scripts/x.py, subcommand)) the run: steps call."""
    targets, paths, subcommands = set(), set(), set()
    for _, _, _, script in run_steps(workflow):
        script = re.sub(r"\\\n", " ", script)
        # the repository is mounted at /src in the test containers
        script = script.replace("/src/", "")
        # make as a command: at the start of a line or after ; && || | ( then do
        for match in re.finditer(r"(?:^|[;&|(]|\bthen|\bdo)[ \t]*make[ \t]+([^\n;&|)]*)", script, re.M):
            for word in match[1].split():
                if word.startswith("-") or "=" in word or word.startswith(('"', "$")):
                    continue
                targets.add(word)
        for match in REPO_PATH.finditer(script):
            paths.add(match[1])
        for match in re.finditer(r"(scripts/\w+\.py)\s+([a-z][a-z-]+)", script):
            subcommands.add((match[1], match[2]))
    return targets, paths, subcommands


def missing(workflow: dict, root: Path = ROOT) -> list[str]:
    targets, paths, subcommands = called(workflow)
    out = [f"make {t}: no such target in the Makefile" for t in sorted(targets - make_targets())]
    for path in sorted(paths):
        if not list(root.glob(path)):
            out.append(f"{path}: no such file in the repository")
    for script, sub in sorted(subcommands):
        if (root / script).is_file():
            r = subprocess.run([sys.executable, str(root / script), sub, "--help"], capture_output=True, text=True)
            if r.returncode:
                out.append(f"{script} {sub}: not a subcommand ({r.stderr.strip().splitlines()[-1:]})")
    return out


def unpinned(workflow: dict) -> list[str]:
    out = []
    for job_id, job in (workflow.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            uses = step.get("uses")
            if uses and not re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}", uses):
                out.append(f"{job_id}: {uses} is not pinned to a commit")
    return out


# --- the workflows ---------------------------------------------------------------------

def test_there_are_the_release_and_bump_workflows():
    assert {p.name for p in WORKFLOWS} >= {"release.yml", "bump.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint(path):
    # actionlint also runs shellcheck on the run: scripts when it finds it on PATH
    r = subprocess.run([actionlint(), "-no-color", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_shellcheck_on_every_run_step(path):
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: `make test-deps` installs it (apt-get install shellcheck)")
    workflow = load(path)
    assert list(run_steps(workflow)), "no run: step found: the parser is broken"
    assert shellcheck_problems(workflow) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_make_target_and_script_called_exists(path):
    workflow = load(path)
    targets, paths, _ = called(workflow)
    print(f"{path.name}: make {sorted(targets)}; files {sorted(paths)}")
    assert missing(workflow) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits_and_jobs_have_timeouts(path):
    workflow = load(path)
    assert unpinned(workflow) == []
    for job_id, job in workflow["jobs"].items():
        assert job.get("timeout-minutes"), f"{job_id}: no timeout-minutes"


def test_release_workflow_covers_every_platform_and_installer():
    wf = load(ROOT / ".github" / "workflows" / "release.yml")
    assert set(wf["jobs"]["build"]["strategy"]["matrix"]["platform"]) == set(lockcheck.PLATFORMS)
    targets = wf["jobs"]["system-test"]["strategy"]["matrix"]["target"]
    assert {t["distro"] for t in targets if t["platform"] == "linux-64"} == {"debian12", "ubuntu2404", "rocky8", "rocky9"}
    assert {t["platform"] for t in targets} | {"linux-ppc64le"} == set(lockcheck.PLATFORMS)
    assert "fromJSON(needs.prepare.outputs.installers)" in str(wf["jobs"]["qemu-test"]["strategy"]["matrix"])
    # the tag filter takes CalVer tags
    assert wf["on"]["push"]["tags"] == ["20[0-9][0-9].[0-9]+.[0-9]+"]
    # nothing is published but from a tag; the release needs every test job
    publish = wf["jobs"]["publish"]
    assert set(publish["needs"]) >= {"system-test", "qemu-test"}
    assert publish["if"] == "needs.prepare.outputs.publish == 'true'"
    assert wf["permissions"] == {"contents": "read"} and publish["permissions"] == {"contents": "write"}


def test_build_tools_are_exact_pins():
    import bump

    pins = bump.read_build_tools()
    assert pins["constructor"] == "3.16.3"
    assert set(pins) == {"constructor", "conda-standalone"}


def test_scripts_requirements_agree_with_the_lock():
    lock = lockcheck.read_lock()
    pinned = lockcheck.read_lock(ROOT / "scripts" / "requirements.txt")
    for name in ("jinja2", "packaging"):
        assert pinned[name] == lock[name], name


def test_ci_scripts_pass_shellcheck():
    scripts = sorted((ROOT / "scripts" / "ci").iterdir())
    assert {p.name for p in scripts} >= {"no-network", "net-trap", "smoke", "rootfs"}
    r = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


# --- the checkers catch what they claim to ---------------------------------------------

BROKEN = """\
name: broken
on: [push]
jobs:
  one:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    steps:
      - uses: actions/checkout@v7
      - run: |
          for f in $(ls build); do echo $f; done
          make no-such-target
          python3 scripts/no_such_script.py
          python3 scripts/bump.py no-such-subcommand
      - run: echo "${{ github.event.issue.title }}"
        shell: bash
"""


def test_the_checkers_catch_a_broken_workflow(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    workflow = load(path)
    r = subprocess.run([actionlint(), "-no-color", "-shellcheck=", str(path)], capture_output=True, text=True)
    assert r.returncode != 0 and "potentially untrusted" in r.stdout, r.stdout
    problems = shellcheck_problems(workflow)
    assert len(problems) == 1 and "SC2045" in problems[0] and "SC2086" in problems[0], problems
    found = missing(workflow)
    assert "make no-such-target: no such target in the Makefile" in found
    assert "scripts/no_such_script.py: no such file in the repository" in found
    assert any(line.startswith("scripts/bump.py no-such-subcommand: not a subcommand") for line in found), found
    assert unpinned(workflow) == ["one: actions/checkout@v7 is not pinned to a commit"]
