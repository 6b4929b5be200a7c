#!/usr/bin/env python3
"""Release steps of .github/workflows/release.yml that are more than a command: each one
runs here too, in tests/test_release.py.

    python scripts/release.py check-tag TAG
        the tag is the version spelled out in the tree, and CHANGELOG.md has its section
    python scripts/release.py check-build DIR --platform P [--flavor NAME]
        what `make installer` wrote into DIR is the installer that was meant (run by it)
    python scripts/release.py notes VERSION
        the release notes: CHANGELOG.md's section for VERSION, and how to verify a download
    python scripts/release.py assets OUT DIR [DIR ...]
        the files to publish, with names of their own, an SBOM for each installer and
        SHA256SUMS over everything
    python scripts/release.py sbom LOCKFILE [--licenses FILE]
        a CycloneDX SBOM of one installer, from constructor's lockfile (and licenses.json)
    python scripts/release.py previous TAG < releases.json
        the newest published release older than TAG (`gh release list --json ...`), or nothing
    python scripts/release.py changelog-release VERSION [--date YYYY-MM-DD]
        turn CHANGELOG.md's [Unreleased] section into VERSION's and open a new one

constructor's build outputs (3.16, build_outputs.py) have fixed names in the output
directory: the installer and `<installer>.sha256`, `lockfile.base.txt` (an @EXPLICIT
list of package URLs with #md5), `pkg-list.base.txt` and `licenses.json` (package ->
license type and files).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lockcheck  # noqa: E402
from build_test_installer import sha256_of  # noqa: E402

ROOT = lockcheck.ROOT
CHANGELOG = ROOT / "CHANGELOG.md"
ARCH = {"linux-64": "x86_64", "linux-aarch64": "aarch64", "linux-ppc64le": "ppc64le"}
# Keep a Changelog 1.1.0: the kinds of change a section may list.
CHANGE_KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
HEADER_END = b"@@END_HEADER@@"


class ReleaseError(Exception):
    pass


# --- CHANGELOG.md ----------------------------------------------------------------------

_SECTION = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?[ \t]*$", re.M)


def changelog_sections(text: str) -> dict[str, tuple[str | None, str]]:
    """{version or 'Unreleased': (date, body)} of a Keep a Changelog file."""
    matches = list(_SECTION.finditer(text))
    out = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end]
        body = re.sub(r"^\[[^\]]+\]: \S+\s*$", "", body, flags=re.M)   # link references at the end
        out[m["version"]] = (m["date"], body.strip())
    return out


def section_problems(version: str, sections: dict) -> list[str]:
    if version not in sections:
        return [f"CHANGELOG.md has no section '## [{version}] - YYYY-MM-DD': move what [Unreleased] lists "
                f"there (`python scripts/release.py changelog-release {version}`)"]
    date, body = sections[version]
    problems = []
    if not date:
        problems.append(f"CHANGELOG.md: the section [{version}] has no date ('## [{version}] - YYYY-MM-DD')")
    if not body:
        problems.append(f"CHANGELOG.md: the section [{version}] is empty")
    for kind in re.findall(r"^### (.+?)\s*$", body, re.M):
        if kind not in CHANGE_KINDS:
            problems.append(f"CHANGELOG.md [{version}]: '### {kind}' is not one of {', '.join(CHANGE_KINDS)}")
    return problems


def notes(version: str, changelog: Path = CHANGELOG) -> str:
    sections = changelog_sections(changelog.read_text())
    problems = section_problems(version, sections)
    if problems:
        raise ReleaseError("\n".join(problems))
    date, body = sections[version]
    return (f"{body}\n\n## Install and verify\n\n"
            f"Download the installer for your machine, `barehub-{version}-Linux-<arch>.sh` "
            "(x86_64, aarch64, ppc64le; flavors are `barehub-<flavor>-...`), its `.sha256` "
            "and check it before running it:\n\n"
            f"    sha256sum -c barehub-{version}-Linux-x86_64.sh.sha256\n"
            f"    sudo bash barehub-{version}-Linux-x86_64.sh -b\n\n"
            "`SHA256SUMS` covers every file of the release. Each installer comes with the exact "
            "conda packages it holds (`.lockfile.txt`, an @EXPLICIT list with md5 sums), their "
            "names (`.pkg-list.txt`), their licenses (`.licenses.json`) and a CycloneDX SBOM "
            "(`.cdx.json`). Upgrading from an older release: docs/upgrade.md.\n")


def changelog_release(version: str, date: datetime.date, changelog: Path = CHANGELOG) -> None:
    text = changelog.read_text()
    sections = changelog_sections(text)
    if version in sections:
        raise ReleaseError(f"CHANGELOG.md already has a section [{version}]")
    if not sections.get("Unreleased", (None, ""))[1]:
        raise ReleaseError("CHANGELOG.md: [Unreleased] is missing or empty: nothing to release")
    text = re.sub(r"^## \[Unreleased\][ \t]*$", f"## [Unreleased]\n\n## [{version}] - {date.isoformat()}",
                  text, count=1, flags=re.M)
    changelog.write_text(text)


def changelog_add(kind: str, items: list[str], changelog: Path = CHANGELOG) -> None:
    """Add `- item` lines under `### kind` of the [Unreleased] section (made if missing)."""
    if kind not in CHANGE_KINDS:
        raise ReleaseError(f"{kind!r} is not one of {CHANGE_KINDS}")
    text = changelog.read_text()
    head = re.search(r"^## \[Unreleased\][ \t]*$", text, re.M)
    if head is None:
        raise ReleaseError("CHANGELOG.md has no '## [Unreleased]' section")
    following = _SECTION.search(text, head.end())
    end = following.start() if following else len(text)
    body = text[head.end():end]
    bullets = "".join(f"- {item}\n" for item in items)
    sub = re.search(rf"^### {kind}[ \t]*\n", body, re.M)
    if sub:
        nxt = re.search(r"^### ", body[sub.end():], re.M)
        cut = sub.end() + (nxt.start() if nxt else len(body[sub.end():]))
        chunk = body[:cut].rstrip("\n") + "\n" + bullets
        body = chunk + ("\n" + body[cut:].lstrip("\n") if body[cut:].strip() else "\n")
    else:
        body = body.rstrip("\n") + f"\n\n### {kind}\n\n{bullets}\n"
    changelog.write_text(text[:head.end()] + body + text[end:])


# --- the tag ------------------------------------------------------------------------------

def check_tag(tag: str) -> list[str]:
    problems = [f"tag {p}" for p in lockcheck.calver_problems(tag)]
    versions = lockcheck.release_versions()
    wrong = {where: v for where, v in versions.items() if v != tag}
    if wrong:
        problems.append(f"the tag is {tag} but the tree says " + ", ".join(f"{w}={v}" for w, v in wrong.items())
                        + f": run `make version VERSION={tag}`, commit, and tag that commit")
    problems += section_problems(tag, changelog_sections(CHANGELOG.read_text()))
    return problems


def previous(tag: str, releases: list[dict]) -> str | None:
    """The newest non-draft, non-prerelease CalVer release older than `tag`."""
    def key(t: str):
        return tuple(int(x) for x in t.split("."))

    older = [r["tagName"] for r in releases
             if not r.get("isDraft") and not r.get("isPrerelease")
             and not lockcheck.calver_problems(r.get("tagName", "")) and key(r["tagName"]) < key(tag)]
    return max(older, key=key, default=None)


# --- what constructor wrote ------------------------------------------------------------------

def parse_lockfile(path: Path) -> tuple[dict[str, str], list[dict]]:
    """(header fields, packages) of constructor's @EXPLICIT lockfile."""
    header, packages, explicit = {}, [], False
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and not explicit:
                header[key.strip()] = value.strip()
            continue
        if line == "@EXPLICIT":
            explicit = True
            continue
        if not explicit:
            raise ReleaseError(f"{path}:{number}: package line before @EXPLICIT")
        url, _, md5 = line.partition("#")
        parsed = urlparse(url)
        parts = unquote(parsed.path).rstrip("/").split("/")
        filename, subdir = parts[-1], parts[-2]
        stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
        if stem == filename:
            raise ReleaseError(f"{path}:{number}: {filename} is not a .conda or .tar.bz2 package")
        name, version, build = stem.rsplit("-", 2)
        channel_path = "/".join(parts[:-2]).lstrip("/")
        channel = channel_path.rsplit("/", 1)[-1] if parsed.scheme != "file" else "local"
        packages.append({"url": url, "md5": md5 or None, "filename": filename, "subdir": subdir, "name": name,
                         "version": version, "build": build, "channel": channel,
                         "ext": filename[len(stem) + 1:]})
    if not explicit:
        raise ReleaseError(f"{path}: no @EXPLICIT line: not a conda explicit lockfile")
    return header, packages


def installer_name(flavor: str | None) -> str:
    return f"barehub-{flavor}" if flavor else "barehub"


def check_build(out: Path, platform: str, flavor: str | None = None) -> list[str]:
    """What is wrong with constructor's output in `out` for this platform and flavor."""
    if platform not in ARCH:
        return [f"{platform} is not one of {sorted(ARCH)}"]
    version = lockcheck.release_versions()["src/barehub/__init__.py"]
    name = installer_name(flavor)
    installer = out / f"{name}-{version}-Linux-{ARCH[platform]}.sh"
    problems = []
    others = sorted(p.name for p in out.glob("*.sh") if p != installer)
    if others:
        problems.append(f"{out} holds other installers too ({', '.join(others)}): one directory per installer")
    for path in (installer, out / f"{installer.name}.sha256", out / "lockfile.base.txt",
                 out / "pkg-list.base.txt", out / "licenses.json"):
        if not path.is_file():
            problems.append(f"{path} is missing (construct.yaml's build_outputs)")
    if problems:
        return problems
    digest, _, listed = (out / f"{installer.name}.sha256").read_text().strip().partition("  ")
    if listed != installer.name or digest != sha256_of(installer):
        problems.append(f"{installer.name}.sha256 does not match {installer.name}")
    data = installer.read_bytes()
    end = data.find(HEADER_END)
    header = data[:end].decode(errors="replace") if end > 0 else ""
    if not header:
        problems.append(f"{installer.name} has no constructor header ({HEADER_END.decode()} not found)")
    else:
        if f"INSTALLER_PLAT='{platform}'" not in header:
            problems.append(f"{installer.name}: its header is not for {platform}")
        if "--no-rc" not in header:
            problems.append(f"{installer.name}: its header does not pass --no-rc to conda: constructor could not "
                            "run the conda-standalone it embeds (a cross build without QEMU registered for "
                            f"{platform}?), so installs would read the machine's .condarc files")
    meta, packages = parse_lockfile(out / "lockfile.base.txt")
    if meta.get("platform") != platform:
        problems.append(f"lockfile.base.txt is for platform {meta.get('platform')!r}, not {platform}")
    foreign = sorted({p["subdir"] for p in packages} - {platform, "noarch"})
    if foreign:
        problems.append(f"lockfile.base.txt has packages for {foreign}, not {platform}")
    found = {p["name"]: p["version"] for p in packages}
    info = lockcheck.parse_construct(environ={"BAREHUB_CHANNEL": str(lockcheck.LOCAL_CHANNEL)}, platform=platform)
    specs = list(info.get("specs", []))
    if flavor:
        specs += lockcheck.load_yaml((ROOT / "flavors" / f"{flavor}.yaml").read_text())["specs"]
    for pkg, pinned in lockcheck.exact_pins(specs)[0].items():
        if found.get(pkg) != pinned:
            problems.append(f"lockfile.base.txt: {pkg} is {found.get(pkg, 'missing')}, construct pins {pinned}")
    try:
        json.loads((out / "licenses.json").read_text())
    except ValueError as e:
        problems.append(f"licenses.json is not JSON: {e}")
    return problems


# --- SBOM and assets ------------------------------------------------------------------------

def sbom(lockfile: Path, licenses: Path | None = None, installer: str | None = None) -> dict:
    """CycloneDX 1.5 JSON for the packages of one installer."""
    meta, packages = parse_lockfile(lockfile)
    license_of = {}
    if licenses is not None and licenses.is_file():
        for dist, entry in json.loads(licenses.read_text()).items():
            # keys are conda dist strings: channel/subdir::name-version-build
            license_of[dist.rsplit("::", 1)[-1]] = (entry or {}).get("type")
    components = []
    for p in packages:
        qualifiers = f"build={p['build']}&channel={p['channel']}&subdir={p['subdir']}&type={p['ext']}"
        purl = f"pkg:conda/{p['name']}@{p['version']}?{qualifiers}"
        component = {"type": "library", "bom-ref": purl, "name": p["name"], "version": p["version"],
                     "purl": purl, "externalReferences": [{"type": "distribution", "url": p["url"]}]}
        if p["md5"]:
            component["hashes"] = [{"alg": "MD5", "content": p["md5"]}]
        lic = license_of.get(f"{p['name']}-{p['version']}-{p['build']}")
        if lic:
            component["licenses"] = [{"license": {"name": lic}}]
        components.append(component)
    name = meta.get("installer-name", "barehub")
    version = meta.get("installer-version", "")
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, lockfile.read_text())}",
        "metadata": {
            "component": {"type": "application", "name": installer or name, "version": version,
                          "bom-ref": f"{name}@{version}"},
            "properties": [{"name": "conda:platform", "value": meta.get("platform", "")},
                           {"name": "conda:created-by", "value": meta.get("created-by", "")}],
        },
        "components": components,
        "dependencies": [{"ref": f"{name}@{version}", "dependsOn": [c["bom-ref"] for c in components]}],
    }


def assets(out: Path, dirs: list[Path]) -> list[Path]:
    """Copy each build directory's outputs into `out` under names of their own."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def put(src: Path, name: str, data: bytes | None = None) -> None:
        if name in written:
            raise ReleaseError(f"two build directories give {name} ({written[name]} and {src}): "
                               "each installer needs its own output directory")
        dest = out / name
        if data is None:
            shutil.copyfile(src, dest)
        else:
            dest.write_bytes(data)
        written[name] = src

    for d in dirs:
        installers = sorted(d.glob("*.sh"))
        if len(installers) != 1:
            raise ReleaseError(f"{d}: expected one installer (.sh), found {[p.name for p in installers]}")
        installer = installers[0]
        stem = installer.name.removesuffix(".sh")
        for src in (installer, d / f"{installer.name}.sha256", d / "lockfile.base.txt",
                    d / "pkg-list.base.txt", d / "licenses.json"):
            if not src.is_file():
                raise ReleaseError(f"{src} is missing")
        put(installer, installer.name)
        put(d / f"{installer.name}.sha256", f"{installer.name}.sha256")
        put(d / "lockfile.base.txt", f"{stem}.lockfile.txt")
        put(d / "pkg-list.base.txt", f"{stem}.pkg-list.txt")
        put(d / "licenses.json", f"{stem}.licenses.json")
        doc = sbom(d / "lockfile.base.txt", d / "licenses.json", installer.name)
        put(d / "lockfile.base.txt", f"{stem}.cdx.json", (json.dumps(doc, indent=1) + "\n").encode())
    sums = "".join(f"{sha256_of(out / name)}  {name}\n" for name in sorted(written))
    (out / "SHA256SUMS").write_text(sums)
    return [out / name for name in sorted(written)] + [out / "SHA256SUMS"]


# --- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-tag").add_argument("tag")
    b = sub.add_parser("check-build")
    b.add_argument("dir", type=Path)
    b.add_argument("--platform", required=True)
    b.add_argument("--flavor")
    sub.add_parser("notes").add_argument("version")
    a = sub.add_parser("assets")
    a.add_argument("out", type=Path)
    a.add_argument("dirs", type=Path, nargs="+")
    s = sub.add_parser("sbom")
    s.add_argument("lockfile", type=Path)
    s.add_argument("--licenses", type=Path)
    sub.add_parser("previous").add_argument("tag")
    c = sub.add_parser("changelog-release")
    c.add_argument("version")
    c.add_argument("--date", type=datetime.date.fromisoformat, default=datetime.date.today())
    args = parser.parse_args(argv)
    try:
        if args.command in ("check-tag", "check-build"):
            problems = check_tag(args.tag) if args.command == "check-tag" else \
                check_build(args.dir, args.platform, args.flavor)
            for line in problems:
                print(f"release.py {args.command}: {line}", file=sys.stderr)
            if not problems:
                print(f"ok: {args.tag if args.command == 'check-tag' else args.dir}")
            return 1 if problems else 0
        if args.command == "notes":
            print(notes(args.version), end="")
        elif args.command == "assets":
            for path in assets(args.out, args.dirs):
                print(path)
        elif args.command == "sbom":
            print(json.dumps(sbom(args.lockfile, args.licenses), indent=1))
        elif args.command == "previous":
            found = previous(args.tag, json.load(sys.stdin))
            if found:
                print(found)
        elif args.command == "changelog-release":
            changelog_release(args.version, args.date)
            print(f"CHANGELOG.md: [Unreleased] is now [{args.version}] - {args.date.isoformat()}")
        return 0
    except (ReleaseError, ValueError, OSError) as e:
        print(f"release.py {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
