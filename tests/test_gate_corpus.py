"""The gate against the real jupyterhub of the lock, one jupyterhub_config.d file at a time.

tests/config_corpus/ holds three sets, one file per case:

- broken/: configurations the real hub refuses. The header says how (`# upstream: start`,
  the hub exits before its API answers; `# upstream: spawn`, it starts but cannot start a
  server) and what `barehub check` must print (`# expect:` lines). The line marked
  `# <- check names this line` is the one check must name.
- valid/: configurations the real hub starts with and spawns with; check must accept them.
- warn/: configurations the real hub starts with but warns about; check must accept them
  and print the warning with the file (and marked line).

For each case, on an installed base with its traefik running (tests/realhub.py), check
runs first and then the real hub, both from a new database. Two bases run side by side.
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
from pathlib import Path

import pytest

import realhub
from conftest import install_base, require_root
from helpers import REPO, report

CORPUS = REPO / "tests" / "config_corpus"
BROKEN = sorted((CORPUS / "broken").glob("*.py"))
VALID = sorted((CORPUS / "valid").glob("*.py"))
WARN = sorted((CORPUS / "warn").glob("*.py"))
MARK = "# <- check names this line"


def header(path: Path, key: str) -> list[str]:
    return re.findall(rf"^# {key}: (.*)$", path.read_text(), re.M)


def marked_line(path: Path) -> int | None:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.rstrip().endswith(MARK):
            return n
    return None


def test_the_corpus_is_large_enough_and_well_formed():
    assert len(BROKEN) >= 25 and len(VALID) >= 10
    for path in BROKEN:
        assert header(path, "upstream") in (["start"], ["spawn"]), path
        assert header(path, "expect"), path
    for path in WARN:
        assert header(path, "expect"), path


@pytest.fixture(scope="module")
def results(scratch, wheelhouse):
    """{case name: (check result, real hub outcome)} for every case, and "" for no file at all."""
    require_root()
    benches = []
    for n in range(2):
        base = scratch / f"corpus-{n}"
        prefix, _url, _ = install_base(base, wheelhouse)
        logs = scratch / f"corpus-{n}-logs"
        logs.mkdir()
        benches.append((realhub.Bench(base, logs), prefix / "bin" / "python"))
    cases: list[Path | None] = [None, *BROKEN, *VALID, *WARN]
    out: dict[str, tuple] = {}

    def work(bench_and_python, todo):
        bench, python = bench_and_python
        for case in todo:
            bench.put(case)
            checked = realhub.check(bench.base, python)
            out[case.name if case else ""] = (checked, bench.outcome(case), bench.base)

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(work, b, cases[i::2]) for i, b in enumerate(benches)]
            for f in futures:
                f.result()
    finally:
        for bench, _ in benches:
            bench.stop()
    upstream = sum(o.seconds for _c, o, _b in out.values())
    report(f"gate corpus: {len(BROKEN)} broken, {len(VALID)} valid, {len(WARN)} warning cases; "
           f"real hub runs took {upstream:.0f} s in all, on two bases side by side")
    yield out
    for bench, _ in benches:
        shutil.rmtree(bench.base, ignore_errors=True)


def test_the_harness_can_start_and_spawn(results):
    """Without a case file, the real hub starts and spawns: a "spawn" outcome below is the file's doing."""
    checked, outcome, _ = results[""]
    assert outcome.kind == "ok", outcome.log[-3000:]
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("case", BROKEN, ids=lambda p: p.stem)
def test_real_jupyterhub_refuses_each_broken_case(results, case):
    _checked, outcome, _ = results[case.name]
    expected = header(case, "upstream")[0]
    assert outcome.kind == expected, f"the real hub's outcome was {outcome.kind!r}:\n{outcome.log[-3000:]}"


@pytest.mark.parametrize("case", BROKEN, ids=lambda p: p.stem)
def test_check_refuses_each_broken_case_naming_file_and_problem(results, case):
    checked, _outcome, base = results[case.name]
    err = checked.stderr
    assert checked.returncode == 1, checked.stdout + err
    where = f"{base}/jupyterhub_config.d/{case.name}"
    line = marked_line(case)
    assert (f"{where}:{line}:" if line else where) in err, err
    for text in header(case, "expect"):
        assert text in err, err
    assert "fix:" in err and "a running hub is left alone" in err


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.stem)
def test_real_jupyterhub_starts_and_spawns_with_each_valid_case(results, case):
    _checked, outcome, _ = results[case.name]
    assert outcome.kind == "ok", outcome.log[-3000:]


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.stem)
def test_check_accepts_each_valid_case(results, case):
    checked, _outcome, _ = results[case.name]
    assert checked.returncode == 0, checked.stderr
    assert "ok:" in checked.stdout and "JupyterHub's start-up accepts them" in checked.stdout


@pytest.mark.parametrize("case", WARN, ids=lambda p: p.stem)
def test_real_jupyterhub_only_warns_and_check_says_where(results, case):
    checked, outcome, base = results[case.name]
    assert outcome.kind == "ok", outcome.log[-3000:]
    for text in header(case, "expect"):
        assert text in outcome.log, f"the real hub did not warn about {text!r}"
    assert checked.returncode == 0, checked.stderr
    warning = next((line for line in checked.stdout.splitlines() if line.startswith("warning: ")
                    and all(t in line for t in header(case, "expect"))), None)
    assert warning, checked.stdout
    assert f"{base}/jupyterhub_config.d/{case.name}:{marked_line(case)}:" in warning
