"""The gate: the one check that runs before anything (re)starts the hub.

`barehub check`, `systemctl reload jupyterhub` (ExecReload), a re-run of
`barehub install`, an upgrade (in the new environment, before the switch) and
`barehub rollback` (in the old environment, before switching back) all call
:func:`check`, so they all refuse the same things.

It checks what barehub owns (barehub.toml, the files [https] names, the
proxy's ports) and then does what JupyterHub's start-up does, short of
serving: the base config and every jupyterhub_config.d file are loaded into a
real ``JupyterHub`` application, every configured class is imported, the
authenticator, the proxy and a spawner for a throwaway user are instantiated,
and users, groups, roles, scopes, services and tokens are initialised against
a private copy of the database. It binds no port, starts no process and never
writes the live database. What JupyterHub would only warn about (an option no
class recognises, a deprecated setting) comes back as a warning naming the
file that set it.

What it cannot see: anything that happens only when a server is spawned or
polled (the spawner's own start() and poll(), which may run sbatch, sudo or
systemd-run), the authenticator's answer to a real login, and whether a
managed service stays up once started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from barehub import hubconfig, proxy, render, safefs, settings as settings_mod, tls
from barehub.layout import Layout
from barehub.settings import Settings

#: The PATH the hub's unit gives it (templates/jupyterhub.service.j2), after the env's bin/.
UNIT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The throwaway user whose spawner is instantiated (in the private copy of the database only).
CHECK_USER = "barehub-check"


@dataclass
class Finding:
    """One problem or warning: where (a file and line, or a setting), what, and the fix."""

    where: str
    what: str
    fix: str = ""
    #: a Python module the configuration needs and this environment lacks (for upgrade messages)
    missing_module: str = ""
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.detail:
            text += "\n" + self.detail.rstrip()
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


@dataclass
class Report:
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    #: how many config.d files were loaded, for the "ok" line
    files: int = 0
    settings: Settings | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, where: str, what: str, fix: str = "", **kw: Any) -> None:
        self.problems.append(Finding(where, what, fix, **kw))

    def warning(self, where: str, what: str, fix: str = "") -> None:
        if not any(w.where == where and w.what == what for w in self.warnings):
            self.warnings.append(Finding(where, what, fix))


class GateError(Exception):
    """The gate refused: str() lists every problem."""

    def __init__(self, report: Report, context: str = ""):
        self.report = report
        lines = [str(p) for p in report.problems]
        if context:
            lines.append(context)
        super().__init__("\n".join(lines))


def check(layout: Layout, *, ports: bool = True, root: bool | None = None,
          current: Settings | None = None, upgrading: bool = False, hub: bool = True) -> Report:
    """Everything that would stop the hub or the proxy from starting with this base.

    ports: also report the proxy's ports taken by another program (only
    meaningful where barehub's services run). root: whether files only root
    may read must be readable (default: this process is root). current:
    settings to check instead of barehub.toml (a first install, from
    BAREHUB_* variables). upgrading: the database may be migrated (on the
    private copy), as the upgrade will do with `jupyterhub upgrade-db`.
    hub: run the JupyterHub start-up (everything but the file checks).
    """
    root = os.geteuid() == 0 if root is None else root
    report = Report()
    s = current
    if s is None:
        try:
            s = settings_mod.load(layout.settings_file)
        except settings_mod.SettingsError as e:
            report.problem("", str(e))
    report.settings = s
    if s is not None:
        check_settings_files(layout, s, report, ports=ports, root=root)
    if report.problems or not hub:
        return report
    HubCheck(layout, s, report, upgrading=upgrading).run()
    return report


def check_settings_files(layout: Layout, s: Settings, report: Report, *, ports: bool, root: bool) -> None:
    """The files [https] names, and (ports=True) the proxy's ports."""
    source = str(layout.settings_file)
    found = tls.check_files(s)
    # Files only root may read are a problem for root (it copies them for traefik), only a
    # warning for a check by another user (a non-root hub's `systemctl reload`).
    (found.problems if root else found.warnings).extend(found.unreadable)
    if ports:
        found.problems.extend(proxy.ports_in_use(layout, s))
    for p in found.problems:
        report.problem(source, p, "fix barehub.toml (or the files it names), then run `barehub check`")
    for w in settings_mod.squattable_ports(s, settings_mod.unprivileged_port_start()):
        report.warning(source, w, "set it in barehub.toml, then run `barehub install` (both services restart)")
    for w in found.warnings:
        report.warning(source, w)


def raise_for(report: Report, context: str = "") -> None:
    if report.problems:
        raise GateError(report, context)


# ------------------------------------------------------------------ where each setting came from


class Provenance:
    """Which jupyterhub_config.d file set each `c.Section.key`, and on which line.

    For a list or a dict (services, load_roles, load_groups), several files may add to
    it: each item is attributed to the file that added it, so that an error about one
    service or role names the file that defined it.
    """

    BASE = "barehub's base config"

    def __init__(self, layout: Layout):
        self.layout = layout
        self.set_by: dict[tuple[str, str], list[Path | str]] = {}
        self.items: dict[tuple[str, str], list[tuple[Path | str, Any]]] = {}
        self._last: dict[tuple[str, str], str] = {}
        self._last_items: dict[tuple[str, str], list[str]] = {}

    @staticmethod
    def _value(value: Any) -> Any:
        if hasattr(value, "get_value") and not isinstance(value, (list, dict)):
            try:
                return value.get_value([] if "append" in repr(value) or "extend" in repr(value) else {})
            except Exception:  # noqa: BLE001 - a lazy value that needs its initial value
                return value
        return value

    @staticmethod
    def _repr(value: Any) -> str:
        try:
            return repr(value)
        except Exception:  # noqa: BLE001 - an object with a broken repr
            return f"<{type(value).__name__} at {id(value):x}>"

    def record(self, c: Any, source: Path | str) -> None:
        for section, values in c.items():
            if not hasattr(values, "items"):
                continue
            for key, raw in values.items():
                k = (section, key)
                value = self._value(raw)
                text = self._repr(value)
                if self._last.get(k) == text:
                    continue
                self._last[k] = text
                self.set_by.setdefault(k, []).append(source)
                if isinstance(value, (list, dict)):
                    entries = list(value.items()) if isinstance(value, dict) else list(value)
                    reprs = [self._repr(e) for e in entries]
                    before = self._last_items.get(k, [])
                    for e, r in zip(entries, reprs):
                        if r not in before:
                            self.items.setdefault(k, []).append((source, e))
                    self._last_items[k] = reprs

    def _place(self, src: Path | str, section: str, key: str, needle: str = "") -> str:
        if src == self.BASE:
            return str(self.layout.settings_file)
        line = _line_with(Path(src), needle) if needle else None
        line = line or _line_of(Path(src), section, key)
        return f"{src}:{line}" if line else str(src)

    def where(self, section: str, key: str) -> str:
        """"file:line" of the last file that set it, barehub.toml for barehub's own, "" if nobody."""
        sources = self.set_by.get((section, key))
        return self._place(sources[-1], section, key) if sources else ""

    def blame(self, section: str, key: str, message: str) -> str:
        """Like where(), but for a list or dict, the file that added the item the message is about:
        the item whose names and values the message quotes (the rarer the word, the more it
        counts), or for a missing key (KeyError: 'name'), the item without it."""
        items = self.items.get((section, key), [])
        if not items:
            return self.where(section, key)
        words = {w.strip(".,;:()[]{}\"'") for w in re.split(r"\s+", message)}
        words = {w for w in words if len(w) >= 2}
        missing = re.search(r"KeyError: '([^']+)'$", message.strip())
        values = [set(_strings(e)) for _src, e in items]
        best, best_score, best_needle = None, 0.0, ""
        for (src, entry), vals in zip(items, values):
            score, needle = 0.0, ""
            for w in words & vals:
                weight = 1.0 / sum(1 for v in values if w in v)
                score += weight
                if len(w) > len(needle):
                    needle = w
            if missing and isinstance(entry, dict) and missing.group(1) not in entry:
                score += 10
            if score > best_score:
                best, best_score, best_needle = src, score, needle
        if best is None:
            return self.where(section, key)
        return self._place(best, section, key, best_needle)

    def shown(self, section: str, key: str) -> str:
        """`c.Section.key = value`, as it was set (long values shortened)."""
        value = self._last.get((section, key), "")
        if len(value) > 100:
            value = value[:97] + "..."
        return f"c.{section}.{key} = {value}" if value else f"c.{section}.{key}"

    def find(self, key: str, sections: list[str] | None = None) -> tuple[str, str] | None:
        """(section, key) for a trait name set in config, preferring the given sections."""
        candidates = [k for k in self.set_by if k[1] == key]
        if sections:
            for sec in sections:
                if (sec, key) in candidates:
                    return (sec, key)
        return candidates[-1] if candidates else None

    def named_in(self, message: str) -> tuple[str, str] | None:
        """A setting whose name the message mentions (`c.X.key`, `X.key` or the bare key)."""
        for section, key in sorted(self.set_by, key=lambda k: -len(k[1])):
            if section == "JupyterHub" and key in ("proxy_class",):
                continue
            if f"{section}.{key}" in message or (len(key) > 6 and re.search(rf"\b{re.escape(key)}\b", message)):
                if any(s != self.BASE for s in self.set_by[(section, key)]):
                    return (section, key)
        return None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a nested config value (keys included), and each word of them."""
    if isinstance(value, str):
        yield value
        yield from value.split()
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _strings(v)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")]


def _line_with(path: Path, needle: str) -> int | None:
    return next((n for n, line in _code_lines(path) if needle in line), None)


def _line_of(path: Path, section: str, key: str) -> int | None:
    patterns = [rf"\b{re.escape(section)}\s*\.\s*{re.escape(key)}\b", rf"\.\s*{re.escape(key)}\b",
                rf"\b{re.escape(key)}\b"]
    lines = _code_lines(path)
    for pattern in patterns:
        rx = re.compile(pattern)
        for n, line in lines:
            if rx.search(line):
                return n
    return None


# ------------------------------------------------------------------ the JupyterHub start-up


class _Capture(logging.Handler):
    """Keeps what the hub logs at WARNING and above while it is being checked."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.records = self.records, []
        return out


#: Which settings each start-up step reads: a failure in the step is the fault of whoever set them.
STEP_KEYS: dict[str, list[tuple[str, str]]] = {
    "secrets": [("JupyterHub", "cookie_secret_file"), ("JupyterHub", "cookie_secret")],
    "internal_ssl": [("JupyterHub", "internal_ssl"), ("JupyterHub", "internal_certs_location"),
                     ("JupyterHub", "external_ssl_authorities")],
    "db": [("JupyterHub", "db_url"), ("JupyterHub", "db_kwargs")],
    "hub": [("JupyterHub", k) for k in ("hub_bind_url", "hub_connect_url", "hub_ip", "hub_port",
                                       "hub_connect_ip", "base_url", "public_url", "subdomain_host",
                                       "hub_routespec", "bind_url")],
    "proxy": [("JupyterHub", "proxy_class"), ("JupyterHub", "bind_url")],
    "role_creation": [("JupyterHub", "load_roles"), ("JupyterHub", "custom_scopes")],
    "users": [("Authenticator", "admin_users"), ("Authenticator", "allowed_users"),
              ("JupyterHub", "admin_users"), ("JupyterHub", "authenticator_class")],
    "groups": [("JupyterHub", "load_groups")],
    "services": [("JupyterHub", "services")],
    "api_tokens": [("JupyterHub", "services"), ("JupyterHub", "api_tokens"), ("JupyterHub", "service_tokens")],
    "role_assignment": [("JupyterHub", "load_roles")],
    "blocked_users": [("Authenticator", "blocked_users")],
    "tornado": [("JupyterHub", k) for k in ("template_paths", "extra_handlers", "tornado_settings",
                                           "jinja_environment_options", "template_vars", "logo_file")],
    "named_servers": [("JupyterHub", "allow_named_servers")],
    "spawner": [("JupyterHub", "spawner_class")],
    "authenticator": [("JupyterHub", "authenticator_class")],
}

FIXES = {
    "secrets": "give the hub its own cookie secret file, mode 600 (barehub keeps one in state/)",
    "db": "correct c.JupyterHub.db_url (barehub's default is the sqlite file in state/)",
    "hub": "use a full URL like http://10.0.0.1:81 (scheme, host, port)",
    "proxy": "barehub runs traefik itself: remove the proxy setting from jupyterhub_config.d/",
    "role_creation": "use scopes from JupyterHub's list (`jupyterhub --help-all` names the documentation), "
                     "or define custom scopes in c.JupyterHub.custom_scopes",
    "users": "check the user names and the authenticator's settings",
    "groups": 'each group is {"users": [...], "properties": {...}, "roles": [...]}',
    "services": 'each service needs a "name"; managed ones a "command" that exists',
    "api_tokens": "tokens must be long random strings (`openssl rand -hex 32`)",
    "role_assignment": "assign roles only to users, groups and services that exist in the configuration",
    "spawner": "correct the spawner's settings",
}


#: Fixes for particular messages, before the step's own.
MESSAGE_FIXES = [
    (r"load_roles: KeyError: 'name'", 'every role needs a "name"'),
    (r"services: KeyError: 'name'|service spec must have a name", 'every service needs a "name"'),
    (r"Cannot override (admin|user|server|token) role",
     "the default roles (admin, user, server, token) keep their scopes: give your role another name"),
    (r"Found undefined (service|user|group) (\S+) in role",
     "define it first (services in c.JupyterHub.services, groups in c.JupyterHub.load_groups), or "
     "remove it from the role"),
    (r"No such service field: (\S+)", "service fields are name, command, url, api_token, admin, user, cwd, "
     "environment, oauth_* and display: correct the misspelt one"),
    (r"does not exist on the system", "create the system account, or choose an authenticator that needs none "
     "(and c.LocalAuthenticator.create_system_users is off by design)"),
    (r"cookie_secret", "remove c.JupyterHub.cookie_secret: barehub keeps a secret in state/ (mode 600)"),
    (r"is not valid$", "user names must pass the authenticator's validate_username (no '/', for one)"),
    (r"TraitError: The '\w+' trait of .* (expected|must be)", "give it a value of the kind the message names"),
]


class HubCheck:
    """One check of the hub's start-up; see the module docstring."""

    def __init__(self, layout: Layout, s: Settings, report: Report, *, upgrading: bool):
        self.layout, self.s, self.report, self.upgrading = layout, s, report, upgrading
        self.prov = Provenance(layout)
        self.capture = _Capture()
        self.app: Any = None
        self._cleanup_dirs: list[str] = []

    # ------------------------------------------------------------ reporting

    def _where_for(self, keys: list[tuple[str, str]], message: str) -> tuple[str, str]:
        """(where, "c.Section.key") of the setting a step reads that a file set."""
        for section, key in reversed(keys):
            if any(s != Provenance.BASE for s in self.prov.set_by.get((section, key), [])):
                return self.prov.blame(section, key, message), f"c.{section}.{key}"
        for section, key in reversed(keys):
            if (section, key) in self.prov.set_by:
                return self.prov.where(section, key), f"c.{section}.{key}"
        return "", ""

    def _trait_from(self, text: str) -> tuple[str, str] | None:
        """(class, trait) from a traitlets message like "The 'x' trait of a Foo instance ..."."""
        m = re.search(r"The '(\w+)' trait of (?:an? (\w+)|<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-f]+>) instance", text)
        return (m.group(2) or m.group(3), m.group(1)) if m else None

    def _mro_names(self, cls_name: str) -> list[str]:
        app = self.app
        classes = []
        for attr in ("authenticator_class", "spawner_class", "proxy_class"):
            try:
                classes.append(getattr(app, attr))
            except Exception:  # noqa: BLE001 - the class itself may be what fails
                pass
        if app is not None:
            classes.append(type(app))
        for cls in classes:
            for k in getattr(cls, "__mro__", ()):
                if k.__name__ == cls_name:
                    return [c.__name__ for c in cls.__mro__ if hasattr(c, "class_traits")]
        return [cls_name]

    def fail(self, step: str, exc: BaseException | None, logged: list[logging.LogRecord]) -> None:
        messages = [_record_text(r) for r in logged if r.levelno >= logging.ERROR]
        what = ""
        if exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, 1, None) and messages):
            what = _exc_text(exc)
        if messages:
            what = (what + "\n" if what else "") + "\n".join(m.strip() for m in messages)
        what = re.sub(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-f]+>", r"a \1", what.strip())
        what = what or f"JupyterHub's start-up failed in its {step} step"
        if os.environ.get("BAREHUB_CHECK_DEBUG") and exc is not None:
            what += "\n" + "".join(traceback.format_exception(exc))
        where = ""
        trait = self._trait_from(what)
        if trait:
            found = self.prov.find(trait[1], self._mro_names(trait[0]))
            if found:
                where = self.prov.where(*found)
                what = f"{self.prov.shown(*found)}: {what}"
        if not where:
            where, setting = self._where_for(STEP_KEYS.get(step, []), what)
            if setting and setting not in what:
                what = f"{setting}: {what}"
        if not where:
            named = self.prov.named_in(what)
            if named:
                where = self.prov.blame(*named, what)
                what = f"c.{named[0]}.{named[1]}: {what}"
        module = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            module = exc.name.split(".")[0]
        elif exc is not None and isinstance(exc.__cause__, ModuleNotFoundError) and exc.__cause__.name:
            module = exc.__cause__.name.split(".")[0]
        fix = next((f for rx, f in MESSAGE_FIXES if re.search(rx, what)), FIXES.get(step, ""))
        if module:
            fix = (f"install the package that provides `{module}` into {self.layout.hub_link} "
                   "(or a flavor: docs/flavors.md), or correct the name")
        elif "import" in what.lower() or "entry point" in what.lower() or "No module named" in what:
            fix = "install the package that provides it (docs/flavors.md), or correct the name"
        self.report.problem(where or "jupyterhub_config.d/", what,
                            (fix + "; then run `barehub check`") if fix else "fix it, then run `barehub check`",
                            missing_module=module)

    def warnings(self, logged: list[logging.LogRecord]) -> None:
        for r in logged:
            msg = _record_text(r)
            where = ""
            m = re.search(r"Config option `(\w+)` not recognized by `(\w+)`", msg)
            if m:
                found = self.prov.find(m.group(1), self._mro_names(m.group(2)))
                if found:
                    where = self.prov.where(*found)
                    msg = f"c.{found[0]}.{found[1]}: {msg} JupyterHub ignores it"
            else:
                named = self.prov.named_in(msg)
                if named:
                    where = self.prov.blame(*named, msg)
            self.report.warning(where, msg)

    # ------------------------------------------------------------ running

    def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="barehub-check-") as tmp, _hub_environ(self.layout):
            # Only warnings and errors matter; alembic's logging set-up (it configures its own
            # console handler when it migrates the private copy) would print the rest.
            logging.disable(logging.INFO)
            try:
                self._run(Path(tmp))
            finally:
                logging.disable(logging.NOTSET)
                self._close()

    def _load_config(self) -> Any | None:
        from traitlets.config import Config

        c = Config()
        try:
            api_password = safefs.read_bytes(self.layout.base, self.layout.proxy_api_password).decode().strip()
        except OSError:
            api_password = "not-yet-created"  # a first install: written before the hub starts
        hubconfig.base_config(self.layout, c, current=self.s, api_password=api_password)
        self.prov.record(c, Provenance.BASE)
        try:
            files = hubconfig.config_d_files(self.layout)
        except safefs.UnsafePath as e:
            self.report.problem("", str(e))
            return None
        self.report.files = len(files)
        for path in files:
            try:
                hubconfig.run_config_d_file(path, c)
            except hubconfig.ConfigDError as e:
                cause = e.__cause__
                module = cause.name.split(".")[0] if isinstance(cause, ModuleNotFoundError) and cause.name else ""
                fix = (f"install the package that provides `{module}` into {self.layout.hub_link}, "
                       "or remove the import" if module else "fix that file")
                self.report.problem(e.where, e.summary, fix + "; then run `barehub check`",
                                    missing_module=module, detail=_short_tb(e.detail))
                return None  # later files may depend on this one
            self.prov.record(c, path)
        return c

    async def _step(self, step: str, fn: Callable[[], Any]) -> bool:
        try:
            result = fn()
            if asyncio.iscoroutine(result):
                await result
        except _Reported:
            self.capture.take()
            return False
        except BaseException as e:  # noqa: BLE001 - SystemExit from app.exit() included
            if isinstance(e, KeyboardInterrupt):
                raise
            self.fail(step, e, self.capture.take())
            return False
        self.warnings(self.capture.take())  # JupyterHub logged it and went on: so does the check
        return True

    def _run(self, tmp: Path) -> None:
        c = self._load_config()
        if c is not None:
            asyncio.run(self._startup(c, tmp))

    async def _startup(self, c: Any, tmp: Path) -> None:
        # jsonschema compiles an optional IRI grammar at import (1 s and more); the check
        # validates no IRIs, so it is left out here (the hub itself is not affected).
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
        from jupyterhub.app import JupyterHub

        app = self.app = JupyterHub()
        app.log.handlers = [self.capture]
        app.log.propagate = False
        app.log.setLevel(logging.INFO)
        for name in ("traitlets", "jupyterhub", "tornado.application"):
            logging.getLogger(name).addHandler(self.capture)
        if not await self._step("config", lambda: app.update_config(c)):
            return
        if not await self._step("classes", self._classes):
            return
        self._private_paths(tmp)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("eventlog", app.init_eventlog),
            ("pycurl", app.init_pycurl),
            ("secrets", app.init_secrets),
            ("internal_ssl", app.init_internal_ssl),
            ("urls", self._urls),
            ("db", self._db),
            ("authenticator", lambda: app.authenticator),  # instantiated: its trait values are validated
            ("hub", app.init_hub),
            ("proxy", self._proxy),
            ("oauth", app.init_oauth),
            ("role_creation", app.init_role_creation),
            ("users", self._users),
            ("groups", app.init_groups),
            ("services", app.init_services),
            ("api_tokens", app.init_api_tokens),
            ("role_assignment", app.init_role_assignment),
            ("blocked_users", app.init_blocked_users),
            ("tornado", self._tornado),
            ("named_servers", app.check_invalid_named_servers),
            ("spawner", self._spawner),
            ("service_commands", self._service_commands),
        ]
        for step, fn in steps:
            if not await self._step(step, fn):
                return

    def _classes(self) -> None:
        app = self.app
        for attr in ("authenticator_class", "spawner_class", "proxy_class"):
            getattr(app, attr)  # resolves (imports) a class given by name or entry point
        self._root_only_spawner(app.spawner_class)

    def _root_only_spawner(self, cls: type) -> None:
        """systemdspawner runs `systemd-run` for each server, which only root may do (barehub sets no polkit)."""
        user = self.s["hub.user"]
        if user == "root" or not any(k.__module__.split(".")[0] == "systemdspawner" for k in cls.__mro__):
            return
        self.report.warning(
            self.prov.where("JupyterHub", "spawner_class") or str(self.layout.settings_file),
            f"c.JupyterHub.spawner_class is {cls.__module__}.{cls.__name__}, but the hub runs as {user!r} "
            f"(hub.user in {self.layout.settings_file}): systemdspawner starts each server with systemd-run, "
            "which needs root, so every spawn would fail",
            'set hub.user = "root" in barehub.toml and run `barehub install` (docs/systemdspawner.md)')

    def _private_paths(self, tmp: Path) -> None:
        """The files start-up would write go to the private directory."""
        app = self.app
        app.pid_file = ""
        if not app.cookie_secret and not os.path.exists(app.cookie_secret_file):
            app.cookie_secret_file = str(tmp / "cookie_secret")  # a first install: none yet
        if app.internal_ssl:
            certs = tmp / "internal-ssl"
            if os.path.isdir(app.internal_certs_location):
                shutil.copytree(app.internal_certs_location, certs)
            app.internal_certs_location = str(certs)

    def _urls(self) -> None:
        """Every URL JupyterHub parses, as it parses them."""
        app = self.app
        for name in ("bind_url", "hub_bind_url", "hub_connect_url", "public_url"):
            value = getattr(app, name)
            if not value:
                continue
            problem = url_problem(value)
            if problem:
                where = self.prov.where("JupyterHub", name)
                self.report.problem(where or str(self.layout.settings_file),
                                    f"c.JupyterHub.{name} = {value!r}: {problem}",
                                    "use a full URL like http://10.0.0.1:81/ (http or https, a host, "
                                    "a port from 1 to 65535); then run `barehub check`")
        base_url = app.base_url
        if not base_url.startswith("/") or "?" in base_url or "#" in base_url:
            self.report.problem(self.prov.where("JupyterHub", "base_url") or "jupyterhub_config.d/",
                                f"c.JupyterHub.base_url = {base_url!r} is not a URL path",
                                'use a path like "/jupyter/"; then run `barehub check`')
        if self.report.problems:
            raise _Reported()

    def _db(self) -> None:
        """init_db against a private copy of the database (or a new one), never the live one."""
        app = self.app
        url = app.db_url
        if url.startswith("sqlite:///") and url[len("sqlite:///"):].split("?")[0] not in ("", ":memory:"):
            live = Path(url[len("sqlite:///"):].split("?")[0])
            copy = Path(self._tmp_dir()) / "jupyterhub.sqlite"
            if live == self.layout.db_file and self.layout.state.is_dir() and not os.access(
                    self.layout.state, os.R_OK | os.X_OK):
                self.report.warning(str(self.layout.state), "this user cannot read state/: users, groups and "
                                    "roles were checked against a new, empty database, not the live one",
                                    "run `barehub check` as root or as the hub's user for the full check")
            planted = live == self.layout.db_file and live.is_symlink() or (
                live.exists() and not live.is_file())
            if planted:  # a link or a FIFO where the hub keeps its db: never opened by root
                self.report.warning(str(live), "is not a regular file: users, groups and roles were checked "
                                    "against a new, empty database", f"look at it: `ls -la {live.parent}`")
            elif live.exists():
                render.sqlite_copy(live, copy)
            elif live != self.layout.db_file and not live.parent.is_dir():  # state/ is made by install
                raise ValueError(f"the database's directory {live.parent} does not exist (db_url {url!r})")
            app.db_url = f"sqlite:///{copy}"
        elif url.startswith("sqlite"):
            pass  # in memory
        else:
            from sqlalchemy import create_engine

            create_engine(url)  # the dialect and its driver import: a missing driver fails here
            self.report.warning(self.prov.where("JupyterHub", "db_url"),
                                f"c.JupyterHub.db_url is not a sqlite file ({urlparse(url).scheme}): "
                                "users, groups and roles were checked against a new, empty database, "
                                "not the live one")
            app.db_url = f"sqlite:///{Path(self._tmp_dir()) / 'jupyterhub.sqlite'}"
        if self.upgrading:
            app.upgrade_db = True  # the upgrade runs `jupyterhub upgrade-db` next; the copy shows it works
        app.init_db()

    def _tmp_dir(self) -> str:
        d = tempfile.mkdtemp(prefix="db-", dir=tempfile.gettempdir())
        self._cleanup_dirs.append(d)
        return d

    def _proxy(self) -> None:
        """The proxy object, with its traits validated; it never talks to traefik or writes its rules.

        jupyterhub-traefik-proxy schedules its set-up (which rewrites the rules file and
        waits for traefik) from __init__; it is cancelled before it can run.
        """
        app = self.app
        app.init_proxy()
        future = getattr(app.proxy, "_start_future", None)
        if future is not None:
            future.cancel()
            app.proxy._start_future = None

    async def _users(self) -> None:
        auth = self.app.authenticator
        if hasattr(auth, "add_system_user"):
            # LocalAuthenticator.create_system_users would run useradd for every missing user
            async def no_useradd(user):  # noqa: ANN001
                return None

            auth.add_system_user = no_useradd
        await self.app.init_users()

    def _tornado(self) -> None:
        app = self.app
        app.init_tornado_settings()
        app.init_handlers()
        app.init_tornado_application()

    def _spawner(self) -> None:
        """A spawner for a throwaway user, as a spawn would make it: its trait values are validated."""
        from jupyterhub import orm

        app = self.app
        orm_user = orm.User(name=CHECK_USER)
        app.db.add(orm_user)
        app.db.commit()
        user = app.users[orm_user]
        user.spawners[""]

    def _service_commands(self) -> None:
        """Each managed service's command (and cwd, and user) must exist: the hub starts them at start-up."""
        import pwd

        path = f"{self.layout.hub_link}/bin:{UNIT_PATH}"
        again = "; then run `barehub check`"
        for spec in self.app.services:
            cmd = spec.get("command")
            if not cmd:
                continue
            name = spec.get("name", "?")
            exe = cmd if isinstance(cmd, str) else list(cmd)[0]
            env_path = (spec.get("environment") or {}).get("PATH", path)
            found = exe if "/" in exe else shutil.which(exe, path=env_path)
            problems = []
            if not found or not os.path.isfile(found):
                problems.append((f"managed service {name!r}: its command {exe!r} does not exist"
                                 + ("" if "/" in exe else f" on the hub's PATH ({env_path})"),
                                 "give the absolute path of an installed program" + again))
            elif not os.access(found, os.X_OK):
                problems.append((f"managed service {name!r}: its command {found!r} is not executable",
                                 f"chmod +x {found}, or give the right program" + again))
            cwd = spec.get("cwd")
            if cwd and not os.path.isdir(cwd):
                problems.append((f"managed service {name!r}: its cwd {cwd!r} is not a directory",
                                 "create it or correct the service's cwd" + again))
            user = spec.get("user")
            if user:
                try:
                    pwd.getpwnam(user)
                except KeyError:
                    problems.append((f"managed service {name!r}: its user {user!r} does not exist",
                                     "create the user or correct the service's user" + again))
            for what, fix in problems:
                self.report.problem(self.prov.blame("JupyterHub", "services", what),
                                    f"c.JupyterHub.services: {what}", fix)
        if self.report.problems:
            raise _Reported()

    def _close(self) -> None:
        app = self.app
        if app is not None and getattr(app, "db", None) is not None:
            try:
                app.db.close()
                app.session_factory.kw["bind"].dispose()
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        for d in self._cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._cleanup_dirs = []
        for name in ("traitlets", "jupyterhub", "tornado.application"):
            logging.getLogger(name).removeHandler(self.capture)



class _Reported(Exception):
    """A step that put its own findings in the report."""


def url_problem(value: str) -> str:
    """Why JupyterHub cannot use this URL, or ""."""
    try:
        u = urlparse(value)
        port = u.port  # raises ValueError for a port that is not a number in range
    except ValueError as e:
        return f"cannot be parsed ({e})"
    if u.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if port is None and u.netloc.rsplit("]", 1)[-1].count(":") and not u.netloc.endswith("]"):
        return "has an empty port"
    return ""


@contextmanager
def _hub_environ(layout: Layout) -> Iterator[None]:
    """What the hub's unit gives it: BAREHUB_BASE, and state/ as the working directory."""
    old_env = os.environ.get("BAREHUB_BASE")
    old_cwd = os.getcwd()
    os.environ["BAREHUB_BASE"] = str(layout.base)
    try:
        if layout.state.is_dir():
            try:
                os.chdir(layout.state)
            except OSError:
                pass
        yield
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop("BAREHUB_BASE", None)
        else:
            os.environ["BAREHUB_BASE"] = old_env


def _record_text(r: logging.LogRecord) -> str:
    """A log record's message, with the last line of its exception (log.exception)."""
    msg = r.getMessage().strip()
    if r.exc_info and r.exc_info[1] is not None:
        msg += f": {type(r.exc_info[1]).__name__}: {r.exc_info[1]}"
    return msg


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return str(exc.code) if exc.code not in (None, 0, 1) else ""
    if isinstance(exc, _Reported):
        return ""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is None and isinstance(exc.__context__, ImportError):
        cause = exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text


def _short_tb(detail: str, keep: int = 12) -> str:
    lines = detail.rstrip().splitlines()
    return "\n".join(lines[-keep:])


def format_report(report: Report) -> list[str]:
    return [f"error: {p}" for p in report.problems]
