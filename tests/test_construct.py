"""Static checks of construct/construct.yaml, parsed the way constructor parses it.

No constructor here (it needs conda-forge): these tests catch what would make the
release build fail (unknown keys, missing files, parse traps) or build the wrong thing.
"""

import copy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import lockcheck  # noqa: E402

# What `make installer` passes (see the installer target in the Makefile).
MAKE_ENVIRON = {"BAREHUB_CHANNEL": str(ROOT / "build" / "channel")}


@pytest.fixture(scope="module")
def info():
    return lockcheck.parse_construct(lockcheck.CONSTRUCT_YAML, environ=MAKE_ENVIRON)


def test_constructor_would_accept_it(info):
    assert lockcheck.check_construct(info, lockcheck.CONSTRUCT_DIR) == []


def test_checker_rejects_a_misspelt_key(info):
    bad = copy.deepcopy(info)
    bad["post_instal"] = bad.pop("post_install")
    problems = lockcheck.check_construct(bad, lockcheck.CONSTRUCT_DIR)
    assert any("'post_instal'" in p and "'post_install'" in p for p in problems), problems


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda i: i.pop("channels"), "no channels"),
        (lambda i: i.pop("specs"), "nothing to install"),
        (lambda i: i.pop("version"), "missing required key 'version'"),
        (lambda i: i.update(post_install="missing.sh"), "does not exist: missing.sh"),
        (lambda i: i.update(extra_files=[{"nope.txt": "etc/nope.txt"}]), "does not exist: nope.txt"),
        (lambda i: i.update(build_outputs=["hash"]), "needs an algorithm"),
        (lambda i: i.update(build_outputs=["sha256"]), "build_outputs"),
        (lambda i: i.update(virtual_specs=["glibc >=2.17"]), "does not start with '__'"),
    ],
)
def test_checker_reports_other_mistakes(info, change, expected):
    bad = copy.deepcopy(info)
    change(bad)
    assert any(expected in p for p in lockcheck.check_construct(bad, lockcheck.CONSTRUCT_DIR))


def test_key_list_is_constructors():
    # Spot checks that the embedded list is the 3.16.x one and not made up.
    keys = lockcheck.CONSTRUCTOR_KEYS
    assert {"build_outputs", "virtual_specs", "initialize_conda", "register_python", "freeze_base"} <= keys
    assert "post_instal" not in keys and "environment_yaml" not in keys
    assert len(keys) == 78


def test_installer_shape(info):
    assert info["name"] == "barehub"
    assert info["installer_type"] == "sh"
    assert info["default_prefix"] == f"/opt/barehub/envs/{info['version']}"
    assert "__glibc >=2.17" in [" ".join(s.split()) for s in info["virtual_specs"]]
    assert info["initialize_conda"] is False
    assert info["register_python"] is False


def test_post_install_is_the_project_hook(info):
    hook = (lockcheck.CONSTRUCT_DIR / info["post_install"]).resolve()
    assert hook == ROOT / "post_install" / "post_install.sh"
    assert hook.is_file()


def test_build_outputs(info):
    outputs = {}
    for item in info["build_outputs"]:
        outputs.update({item: None} if isinstance(item, str) else item)
    assert outputs["hash"] == {"algorithm": "sha256"}
    assert {"lockfile", "pkgs_list", "licenses"} <= set(outputs)


def test_channels_are_the_local_one_then_conda_forge(info):
    assert info["channels"] == [f"file://{ROOT}/build/channel", "conda-forge"]
    assert (ROOT / "build" / "channel") == lockcheck.LOCAL_CHANNEL


def test_local_channel_default_is_relative_to_the_working_directory(monkeypatch):
    # Without BAREHUB_CHANNEL, constructor run from the repository root still finds it.
    monkeypatch.chdir(ROOT)
    info = lockcheck.parse_construct(lockcheck.CONSTRUCT_YAML, environ={})
    assert info["channels"][0] == f"file://{ROOT}/build/channel"


def test_all_specs_are_exact_pins(info):
    pins, loose = lockcheck.exact_pins(info["specs"])
    assert loose == []
    assert len(pins) == len(info["specs"])


def test_jinja_is_rendered_only_when_the_raw_text_is_not_yaml():
    # constructor's trap: valid YAML is never rendered, so {{ }} would stay literal.
    text = 'name: x\nchannels:\n  - file://{{ environ["D"] }}\n'
    assert "{{" in lockcheck.preprocess(text, {"D": "/c"})
    forced = "{% set d = environ['D'] %}\n" + text
    assert "file:///c" in lockcheck.preprocess(forced, {"D": "/c"})


def test_selectors_apply_and_trailing_brackets_are_selectors():
    text = "a: 1  # [linux]\nb: 2  # [win]\nc: 3  # [not osx]\n"
    assert lockcheck.preprocess(text, {}).split() == ["a:", "1", "c:", "3"]
    # A flow list at the end of a line is read as a selector by constructor too.
    with pytest.raises(ValueError, match="invalid selector"):
        lockcheck.preprocess("channels: [conda-forge]\n", {})


def test_a_selector_may_be_followed_by_text_after_a_comment():
    """constructor's pattern (conda-build's): with a comment before the brackets, text
    without parentheses may follow them; `key: value  # [linux] more` is a selector line."""
    text = "a: 1  # [win] only there\nb: 2  # [linux] kept, on linux\nc: 3  # [win] (parenthesised) text\n"
    kept = lockcheck.preprocess(text, {})
    assert "a: 1" not in kept and "b: 2" in kept
    # parentheses after the brackets: not a selector, so the line stays as it is
    assert "c: 3  # [win] (parenthesised) text" in kept


@pytest.mark.parametrize("platform, kept", [("linux-64", "x86_64"), ("linux-aarch64", "aarch64"),
                                            ("linux-ppc64le", "ppc64le")])
def test_selectors_follow_the_target_platform(platform, kept):
    text = "".join(f"{arch}: 1  # [{arch}]\n" for arch in ("x86_64", "aarch64", "ppc64le"))
    assert lockcheck.preprocess(text, {}, lockcheck.selectors_for(platform)).split() == [f"{kept}:", "1"]


@pytest.mark.parametrize("platform", lockcheck.PLATFORMS)
def test_construct_yaml_is_the_same_for_every_platform(platform, info):
    assert lockcheck.parse_construct(lockcheck.CONSTRUCT_YAML, environ=MAKE_ENVIRON, platform=platform) == info


def test_yaml_is_read_as_constructor_reads_it_with_ruamel():
    """ruamel (YAML 1.2, round-trip) where PyYAML (YAML 1.1) would differ: `yes` is a string,
    and a repeated key is an error instead of the last one winning silently."""
    from ruamel.yaml import YAMLError

    assert lockcheck.load_yaml("register_python: yes\n") == {"register_python": "yes"}
    with pytest.raises(YAMLError, match="duplicate key"):
        lockcheck.load_yaml("name: barehub\nname: other\n")


def test_checker_rejects_a_yaml_1_1_boolean(info):
    bad = copy.deepcopy(info)
    bad["register_python"] = lockcheck.load_yaml("v: no\n")["v"]
    assert any("register_python" in p and "not a boolean" in p
               for p in lockcheck.check_construct(bad, lockcheck.CONSTRUCT_DIR))
