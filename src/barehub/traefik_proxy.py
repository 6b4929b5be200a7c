"""The proxy class the hub uses: jupyterhub-traefik-proxy's file provider,
with a rules file that is cheap to rewrite and to reload.

Upstream keeps every route in one rules file, re-serialises the whole
configuration with the ``toml`` library on every add_route and delete_route
(1.5 s at 5,000 routes, on the hub's event loop), writes it in a way that
wakes traefik several times, and confirms a route with an exponential backoff
starting at 200 ms. Here:

- the rules file (``dynamic_config_file``, ``jupyterhub.toml`` in the rules
  directory) is the hub's own configuration (the API router and its basic
  auth) followed by one block of text per route. Each block is rendered once,
  when its route is added, and kept; a change renders one block and joins the
  cached ones: milliseconds at 5,000 routes. Concurrent changes share one
  write;
- each route block starts with a comment holding the hub's record of the
  route (routespec, target, data, entry point) as JSON, so that a restarted
  hub reloads its routes with one ``json.loads`` per route, without a TOML
  parser;
- the file is written in ``.staging/`` inside the rules directory, with mode
  640 (its group, the proxy user's, comes from the setgid directory), then
  renamed into place: traefik, which watches the directory (not its
  subdirectories), sees exactly one event per change, and never a partial or
  unreadable file;
- add_route is confirmed through traefik's API: every write carries a
  generation marker (an unused service, ``barehub_generation``, whose URL
  names this hub's nonce and the write's number), and one poller, shared by
  every waiting add_route, asks traefik for that one service every few
  milliseconds. An add_route returns once the rebuild containing its write
  is live. A burst of changes costs one or two writes and traefik rebuilds
  (changes made while a write is under way share the next one), not one
  per ``concurrency`` changes with hundreds of API polls competing with the
  rebuild for the CPU (upstream confirms under a semaphore of 10, each route
  polled on its own);
- users' routes are grouped under parent routers, one per prefix of the user
  name (traefik's multi-layer routing, ``parentRefs``): traefik tries its
  routers one after the other, so with 5,000 routes in one flat list every
  request costs thousands of rule checks. Each group also has a
  lowest-priority child to the hub's route, so a request in a group with no
  matching route still reaches the hub, as it does without groups
  (``route_bucket_chars``).

One file rather than one file per route: traefik re-reads its whole directory
on every change, and 5,000 small files cost it far more than one big one
(benchmarks/README.md).

A rules file written by an older barehub (upstream's format, routes under
``[jupyterhub.routes]``) is read with a TOML parser once and rewritten in this
format. Routes on the other entry point ("web" or "https", after HTTPS was
switched on or off) are moved to the current one when the hub loads them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import bcrypt
import toml
from jupyterhub_traefik_proxy import traefik_utils
from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy
from jupyterhub_traefik_proxy.proxy import TraefikProxy
from tornado.httpclient import HTTPClientError
from traitlets import Integer, Unicode, default

HEADER = "# barehub route "
GENERATION_SERVICE = "barehub_generation"  # the marker: never used by a router
ROUTES_MARK = "# ---- routes: one block per route, written by the hub; do not edit ----"
STAGING = ".staging"


def _toml_str(value: str) -> str:
    # JSON string escapes are TOML basic-string escapes, except that TOML has no
    # surrogate escapes (hence ensure_ascii=False) and forbids a raw DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


#: A percent-encoded reserved character (RFC 3986 gen-delims and sub-delims) or "%".
_RESERVED_ESCAPE = re.compile("(" + "|".join(f"%{ord(c):02X}" for c in ":/?#[]@!$&'()*+,;=%") + ")", re.I)


def traefik_path(routespec: str) -> str:
    """The routespec as traefik's rules see request paths: reserved characters (RFC 3986) still
    percent-encoded, the others decoded. Upstream decodes all, so a name with "(" never matched."""
    return "".join(part if _RESERVED_ESCAPE.fullmatch(part) else unquote(part)
                   for part in _RESERVED_ESCAPE.split(routespec))


def route_rule(routespec: str) -> str:
    """traefik's rule for a routespec, as upstream's generate_rule makes it, but never injectable.

    Upstream URL-decodes the routespec and puts it between backticks, so a user
    name with a backtick (JupyterHub's default validation allows it) ends the
    string and adds rule syntax of its own: a user named
    ``a`) || PathRegexp(`login`) || PathRegexp(`zz`` took /hub/login. A string
    with a backtick or a control character is written as a
    double-quoted, escaped string instead (traefik accepts both forms, and
    reads the escapes as Go does), so it only ever matches itself.
    """
    if not routespec.endswith("/"):
        raise ValueError("routespec must end with /")
    spec = traefik_path(routespec)
    if spec.startswith("/"):
        host, path = "", spec
    else:  # host-based routing: host.tld/path/
        host, slash, rest = spec.partition("/")
        path = slash + rest

    def q(text: str) -> str:
        if "`" in text or any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
            return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
        return f"`{text}`"

    rule = f"PathPrefix({q(path)})"
    if path.rstrip("/"):
        rule = f"( {rule} || Path({q(path.rstrip('/'))}) )"
    return f"Host({q(host)}) && {rule}" if host else rule


def route_block(routespec: str, target: str, data: dict, entrypoint: str, priority: int = 0,
                parent: str = "") -> str:
    """The rules of one route: traefik's router and service, after a comment with the hub's record.

    With ``parent`` (a bucket's router), the router is that router's child
    and has no entry point of its own.
    """
    router = traefik_utils.generate_alias(routespec, "router")
    service = traefik_utils.generate_alias(routespec, "service")
    rule = route_rule(routespec)
    record = {"routespec": routespec, "target": target, "data": data, "entryPoint": entrypoint,
              "router": router, "service": service, "rule": rule, "parent": parent}
    if priority:
        record["priority"] = int(priority)
    lines = [
        HEADER + json.dumps(record, separators=(",", ":"), sort_keys=True),
        f"[http.routers.{router}]",
        f"  rule = {_toml_str(rule)}",
        f"  parentRefs = [{_toml_str(parent + '@file')}]" if parent else f"  entryPoints = [{_toml_str(entrypoint)}]",
        f"  service = {_toml_str(service)}",
    ]
    if priority:
        lines.append(f"  priority = {int(priority)}")
    lines += [
        f"[http.services.{service}.loadBalancer]",
        "  passHostHeader = true",
        f"  [[http.services.{service}.loadBalancer.servers]]",
        f"    url = {_toml_str(target)}",
        # No copy of upstream's record ([jupyterhub.routes]): traefik parses the whole file on
        # every change, and that copy made a rebuild at 5,000 routes ~30% slower
        # (benchmarks/README.md). The comment above is the hub's record.
    ]
    return "\n".join(lines) + "\n"


def bucket_router(key: str) -> str:
    return traefik_utils.generate_alias(key, "bucket")


def bucket_blocks(buckets: dict[str, int], entrypoint: str, fallback_service: str) -> str:
    """The parent router of each bucket, and its fallback child to the hub (as without buckets)."""
    lines = []
    for key in sorted(buckets):
        name = bucket_router(key)
        lines += [f"[http.routers.{name}]",
                  f"  rule = {_toml_str(f'PathPrefix(`{key}`)')}",
                  f"  entryPoints = [{_toml_str(entrypoint)}]"]
        if fallback_service:
            lines += [f"[http.routers.{name}-hub]",
                      f"  rule = {_toml_str(f'PathPrefix(`{key}`)')}",
                      f"  parentRefs = [{_toml_str(name + '@file')}]",
                      f"  service = {_toml_str(fallback_service)}",
                      "  priority = 1"]
    return "\n".join(lines) + ("\n" if lines else "")


_RECORD_KEYS = {"routespec", "target", "router", "service", "rule"}


def parse_record(line: str) -> dict | None:
    """The hub's record from a route block's first line; None when it is not one."""
    if not line.startswith(HEADER):
        return None
    record = json.loads(line[len(HEADER):])
    if not isinstance(record, dict) or not _RECORD_KEYS <= record.keys():
        return None
    return record


def split_rules(text: str) -> tuple[str, list[tuple[dict, str]] | None, list[str]]:
    """(the hub's own configuration, [(route record, its block)], unreadable record lines) of a rules file.

    The routes are None for a file in upstream's format (an older barehub).
    """
    base, mark, routes = text.partition("\n" + ROUTES_MARK + "\n")
    if not mark:
        return text, None, []
    out: list[tuple[dict, str]] = []
    bad: list[str] = []
    # each block starts with its record line; text before the first one is not a route's
    for chunk in ("\n" + routes).split("\n" + HEADER)[1:]:
        line, _, rest = chunk.partition("\n")
        try:
            record = parse_record(HEADER + line)
        except ValueError:
            record = None
        if record is None:
            bad.append((HEADER + line)[:200])
        else:
            out.append((record, HEADER + chunk + ("" if chunk.endswith("\n") else "\n")))
    return base, out, bad


class BarehubProxy(TraefikFileProviderProxy):
    """TraefikFileProviderProxy with a group-readable rules file rewritten from cached route blocks.

    ``dynamic_config`` stays upstream's full in-memory view (routers, services
    and the ``jupyterhub.routes`` records of every route), so get_route and
    get_all_routes answer from memory.
    """

    route_bucket_chars = Integer(
        -1,
        config=True,
        help="""Two-layer routing for users' routes (traefik >= 3.6 parentRefs): routes under
        users_prefix are grouped by the first this-many characters of the user's name, under
        one parent router per group. traefik checks its routers one after the other, so a
        request then costs ~(groups + routes in one group) checks instead of ~(all routes):
        ~8x less proxy CPU per request at 5,000 routes. 0: one flat list of routers.
        -1 (default): chosen when the hub starts, from the names of the routes it finds
        (the fewest checks for the worst request), 2 when there are none.""",
    )
    users_prefix = Unicode(
        "",
        config=True,
        help="URL prefix of users' servers; default: the hub's base_url + 'user/'.",
    )

    @default("users_prefix")
    def _default_users_prefix(self):
        base_url = getattr(self.app, "base_url", None) or "/"
        return base_url.rstrip("/") + "/user/"

    _blocks: dict[str, str]  # router alias -> its block of the rules file
    _bucket_of: dict[str, str]  # router alias -> its bucket key, for bucketed routes
    _base_text: str = ""
    _changes = 0  # changes made in memory
    _saved = 0  # changes in the file on disk
    _write_lock: asyncio.Lock | None = None
    _generation = 0  # number of the last write (its marker in the file)
    _saved_generation = 0  # the write that has the changes counted in _saved
    _live_generation = 0  # the newest of this hub's writes traefik's API shows
    _nonce = ""  # this proxy object's, in the marker: a restarted hub never mistakes an older hub's write for its own
    _waiters: list | None = None  # [(generation, future)] of add_route calls waiting for traefik
    _poller: asyncio.Task | None = None

    @property
    def rules_dir(self) -> Path:
        return Path(os.path.abspath(self.dynamic_config_file)).parent

    # ------------------------------------------------------------ writing

    _chars = 0  # route_bucket_chars, or the number chosen from the routes at load

    def _choose_chars(self, routespecs) -> int:
        """The prefix length whose groups make the worst request cheapest: groups + largest group."""
        if self.route_bucket_chars >= 0:
            return self.route_bucket_chars
        prefix = self.users_prefix
        names = [spec[len(prefix):].split("/", 1)[0] for spec in routespecs if spec.startswith(prefix)]
        if len(names) < 50:
            return 2
        best_cost, best_k = len(names), 0
        for k in range(1, 9):
            counts: dict[str, int] = {}
            short = 0
            for name in names:
                if len(name) >= k:
                    counts[name[:k]] = counts.get(name[:k], 0) + 1
                else:
                    short += 1
            cost = len(counts) + short + max(counts.values(), default=0)
            if cost < best_cost:
                best_cost, best_k = cost, k
        return best_k

    def _bucket(self, routespec: str) -> str:
        """The bucket key (a path prefix) of a route, or "" for a route kept at the top level.

        Like the routes' own rules (upstream's generate_rule), the key is
        matched against the decoded path.
        """
        k, prefix = self._chars, self.users_prefix
        if k <= 0 or self.host_routing or not routespec.startswith(prefix):
            return ""
        path = traefik_path(routespec)
        if not path.startswith(prefix):
            return ""
        name = path[len(prefix):].split("/", 1)[0]
        key = prefix + name[:k]
        return key if len(name) >= k and "`" not in key else ""

    def _block_for(self, alias: str) -> str:
        route = self.dynamic_config["jupyterhub"]["routes"][alias]
        router = self.dynamic_config["http"]["routers"][alias]
        key = self._bucket(route["routespec"])
        if key:
            self._bucket_of[alias] = key
        else:
            self._bucket_of.pop(alias, None)
        return route_block(route["routespec"], route["target"], route.get("data", {}),
                           router["entryPoints"][0], router.get("priority", 0),
                           bucket_router(key) if key else "")

    def _fallback_service(self) -> str:
        """The service of the longest top-level route that covers users_prefix (the hub's "/")."""
        best, service = -1, ""
        for alias, route in self.dynamic_config["jupyterhub"]["routes"].items():
            spec = route["routespec"]
            if alias not in self._bucket_of and spec.startswith("/") and self.users_prefix.startswith(spec):
                if len(spec) > best:
                    best, service = len(spec), route["service"]
        return service

    def _base_config(self) -> dict:
        """dynamic_config without the routes: the hub's own part of the rules."""
        config = {k: v for k, v in self.dynamic_config.items() if k != "jupyterhub"}
        routes = self.dynamic_config.get("jupyterhub", {}).get("routes", {})
        http = dict(config.get("http", {}))
        for kind, key in (("routers", "router"), ("services", "service")):
            names = {r.get(key) for r in routes.values()}
            kept = {k: v for k, v in http.get(kind, {}).items() if k not in names}
            if kept:
                http[kind] = kept
            else:
                http.pop(kind, None)  # traefik rejects empty tables
        if http:
            config["http"] = http
        else:
            config.pop("http", None)
        return config

    def _rules_text(self) -> str:
        header = ("# traefik's rules for JupyterHub: the hub's API router, then its routes.\n"
                  "# Written by the hub (barehub.traefik_proxy); changes here are lost.\n")
        buckets: dict[str, int] = {}
        for key in self._bucket_of.values():
            buckets[key] = buckets.get(key, 0) + 1
        parents = bucket_blocks(buckets, self.traefik_entrypoint, self._fallback_service()) if buckets else ""
        # the buckets' routers and the marker go after the mark, before the first route: derived, never loaded
        return "".join([header, self._base_text, "\n", ROUTES_MARK, "\n", self._marker(), parents,
                        *self._blocks.values()])

    def _marker(self) -> str:
        if not self._nonce:
            self._nonce = secrets.token_hex(6)
        return (f"[http.services.{GENERATION_SERVICE}.loadBalancer]\n"
                f"  [[http.services.{GENERATION_SERVICE}.loadBalancer.servers]]\n"
                f"    url = \"http://127.0.0.1:9/{self._nonce}/{self._generation}\"\n")

    def _write_file(self, text: str) -> None:
        """Put the rules at dynamic_config_file (mode 640) with one rename from the unwatched staging dir."""
        path = Path(self.dynamic_config_file)
        staging = path.parent / STAGING
        tmp = staging / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        except FileNotFoundError:
            # inside the setgid rules directory: it gets the proxy group and setgid too
            staging.mkdir(mode=0o750, parents=True, exist_ok=True)  # setgid comes from the rules dir; RestrictSUIDSGID= forbids asking for it
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.fchmod(fd, 0o640)  # whatever the umask
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _persist_dynamic_config(self):
        """Write the whole file now (setup, loading): the hub's part re-rendered, the route blocks cached."""
        self._base_text = toml.dumps(self._base_config())
        self._generation += 1
        self._write_file(self._rules_text())
        self._saved = self._changes
        self._saved_generation = self._generation

    async def _save(self) -> int:
        """Write the rules after a change; changes made meanwhile share the write.

        Returns the generation of a write that has the change.
        """
        self._changes += 1
        wanted = self._changes
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            if self._saved >= wanted:
                return self._saved_generation  # a write that started after our change has it already
            # once round the event loop: the other changes of a burst (calls started together) join this write
            await asyncio.sleep(0)
            done = self._changes
            self._generation += 1
            generation = self._generation
            text = self._rules_text()
            await asyncio.to_thread(self._write_file, text)
            if done > self._saved:
                self._saved, self._saved_generation = done, generation
            return generation

    async def _generation_live(self) -> int:
        """The number of this hub's newest write that traefik's API shows (0: none yet)."""
        try:
            resp = await self._traefik_api_request(f"/api/http/services/{GENERATION_SERVICE}@{self.provider_name}")
        except HTTPClientError as e:
            if e.code == 404:
                return 0
            raise
        servers = json.loads(resp.body).get("loadBalancer", {}).get("servers") or [{}]
        nonce, _, number = str(servers[0].get("url", "")).rpartition("/")
        return int(number) if nonce.endswith("/" + self._nonce) and number.isdigit() else 0

    async def _poll_generations(self) -> None:
        """One loop for every waiting add_route: ask traefik for the marker until no one waits."""
        wait = 0.002
        try:
            while self._waiters:
                try:
                    live = await self._generation_live()
                except HTTPClientError as e:
                    if e.code == 599:  # no connection: traefik restarting, say; the waiters time out if it lasts
                        self.log.debug("traefik's API: %s", e)
                        live = 0
                    else:  # refused (a wrong API password, say): every waiting add_route fails with it
                        for _, fut in self._waiters:
                            if not fut.done():
                                fut.set_exception(e)
                        self._waiters = []
                        return
                except OSError as e:
                    self.log.debug("traefik's API: %s", e)
                    live = 0
                if live > self._live_generation:
                    self._live_generation, wait = live, 0.002
                waiting = []
                for generation, fut in self._waiters:
                    if fut.done():
                        continue
                    if generation <= self._live_generation:
                        fut.set_result(None)
                    else:
                        waiting.append((generation, fut))
                self._waiters = waiting
                if waiting:
                    await asyncio.sleep(wait)
                    wait = min(wait * 1.5, 0.025)
        finally:
            self._poller = None

    async def _wait_for_generation(self, generation: int, routespec: str) -> None:
        """Until traefik runs a configuration with the given write (or a later one) of this hub."""
        if generation <= self._live_generation:
            return
        fut = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append((generation, fut))
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll_generations())
        try:
            await asyncio.wait_for(fut, self.check_route_timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"traefik did not load the route for {routespec} within "
                               f"{self.check_route_timeout} s: see `journalctl -u jupyterhub-proxy`") from None

    # ------------------------------------------------------------ loading

    @default("dynamic_config")
    def _load_dynamic_config(self):
        self._blocks = {}
        self._bucket_of = {}
        path = Path(self.dynamic_config_file)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        # thousands of small dicts: the cyclic GC would run many times for nothing (3x the time)
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            return self._load(path, text)
        finally:
            if gc_was_on:
                gc.enable()

    def _load(self, path: Path, text: str) -> dict:
        base_text, records, bad = split_rules(text)
        if bad:
            self.log.warning("%s: ignored %d unreadable route record(s), e.g. %r. The hub adds the routes "
                             "of running servers again on its next route check.", path, len(bad), bad[0])
        config = toml.loads(base_text)
        http = config.setdefault("http", {})
        http.setdefault("routers", {})
        http.setdefault("services", {})
        routes = config.setdefault("jupyterhub", {}).setdefault("routes", {})
        rewrite = records is None and bool(routes)  # upstream's format, from an older barehub
        self._chars = self._choose_chars(r["routespec"] for r, _ in records or ()) if records is not None \
            else self._choose_chars(r.get("routespec", "") for r in routes.values())
        loaded_blocks = {}
        regroup = 0  # routes written with other route_bucket_chars or users_prefix
        for record, block in records or ():
            alias, service = record["router"], record["service"]
            router = {"service": service, "rule": record["rule"],
                      "entryPoints": [record.get("entryPoint") or self.traefik_entrypoint]}
            if record.get("priority"):
                router["priority"] = record["priority"]
            http["routers"][alias] = router
            http["services"][service] = {"loadBalancer": {"servers": [{"url": record["target"]}],
                                                          "passHostHeader": True}}
            routes[alias] = {"data": record.get("data", {}), "routespec": record["routespec"],
                             "target": record["target"], "router": alias, "service": service}
            key = self._bucket(record["routespec"])
            spec = record["routespec"]
            # an older barehub's rule: injectable (a backtick) or never matching (a reserved character)
            stale = ("%" in spec or "`" in spec) and record["rule"] != route_rule(spec)
            # as written, unless grouped otherwise, stale, or with upstream's record (an older barehub's copy)
            if (record.get("parent", "") == (bucket_router(key) if key else "") and not stale
                    and "\n[jupyterhub." not in block):
                loaded_blocks[alias] = block  # as written: no need to render it again
                if key:
                    self._bucket_of[alias] = key
            else:
                regroup += 1
        moved = 0
        for alias in routes:
            router = http["routers"].get(alias)
            if router is not None and router.get("entryPoints") != [self.traefik_entrypoint]:
                router["entryPoints"] = [self.traefik_entrypoint]
                loaded_blocks.pop(alias, None)
                moved += 1
        self.dynamic_config = config
        for alias in routes:
            if alias in loaded_blocks:
                self._blocks[alias] = loaded_blocks[alias]
            elif alias in http["routers"]:
                self._blocks[alias] = self._block_for(alias)
        if moved:
            self.log.info("Moved %d route(s) to traefik entry point %r", moved, self.traefik_entrypoint)
        if rewrite:
            self.log.info("Rewriting %s (%d routes) in barehub's format", path, len(routes))
        if moved or rewrite or regroup:
            try:
                self._persist_dynamic_config()
            except OSError as e:
                self.log.error("Could not rewrite %s: %s. Its routes keep working as they are.", path, e)
        self.log.info("Loaded %d route(s) from %s", len(routes), path)
        return config

    # ------------------------------------------------------------ routes

    async def _apply_dynamic_config(self, traefik_config, jupyterhub_config=None):
        async with self.mutex:
            if jupyterhub_config is None:
                # setup: the API router and middleware
                self.dynamic_config = traefik_utils.deep_merge(self.dynamic_config, dict(traefik_config))
                self._base_text = toml.dumps(self._base_config())
            else:
                traefik_utils.deep_merge(self.dynamic_config, {**traefik_config, "jupyterhub": jupyterhub_config})
                for alias in jupyterhub_config["routes"]:
                    self._blocks[alias] = self._block_for(alias)
        return await self._save()

    async def _delete_dynamic_config(self, traefik_keys, jupyterhub_keys):
        async with self.mutex:
            http = self.dynamic_config["http"]
            for key_path in traefik_keys:
                if key_path[:2] == ["http", "routers"]:
                    http["routers"].pop(key_path[2], None)
                elif key_path[:2] == ["http", "services"]:
                    http["services"].pop(key_path[2], None)
            routes = self.dynamic_config["jupyterhub"]["routes"]
            for key_path in jupyterhub_keys:
                if routes.pop(key_path[-1], None) is None:
                    self.log.warning("No route %s to delete", key_path[-1])
                self._blocks.pop(key_path[-1], None)
                self._bucket_of.pop(key_path[-1], None)
        return await self._save()

    async def add_route(self, routespec, target, data):
        """As upstream's, without its semaphore: a burst shares writes, and waits on one poller."""
        if self._start_future and not self._start_future.done():
            await self._start_future
        routespec = self.validate_routespec(routespec)
        traefik_config, jupyterhub_config = self._dynamic_config_for_route(routespec, target, data)
        generation = await self._apply_dynamic_config(traefik_config, jupyterhub_config)
        try:
            await self._wait_for_generation(generation, routespec)
        except TimeoutError:
            self.log.error(f"Traefik route for {routespec} never appeared.")
            raise

    async def _wait_for_route(self, routespec):
        """Until traefik's API shows the route's router, and its service with the new target."""
        router_alias = traefik_utils.generate_alias(routespec, "router")
        service_alias = traefik_utils.generate_alias(routespec, "service")
        route = self.dynamic_config["jupyterhub"]["routes"].get(router_alias) or {}
        target = route.get("target")

        async def get(kind, alias):
            try:
                resp = await self._traefik_api_request(f"/api/http/{kind}/{alias}@{self.provider_name}")
            except HTTPClientError as e:
                if e.code == 404:
                    return None
                raise
            return json.loads(resp.body)

        deadline = time.monotonic() + self.check_route_timeout
        wait = 0.002
        while True:
            router, service = await asyncio.gather(get("routers", router_alias), get("services", service_alias))
            if router is not None and service is not None:
                servers = service.get("loadBalancer", {}).get("servers", [])
                if target is None or any(s.get("url") == target for s in servers):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"traefik did not load the route for {routespec} within "
                                   f"{self.check_route_timeout} s: see `journalctl -u jupyterhub-proxy`")
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 0.05)

    # ------------------------------------------------------------ traefik settings

    async def _setup_traefik_static_config(self):
        """When the hub starts traefik itself (tests, benchmarks): watch the rules directory."""
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        self.static_config["providers"] = {"file": {"directory": str(self.rules_dir), "watch": True}}
        await TraefikProxy._setup_traefik_static_config(self)

    @default("traefik_api_hashed_password")
    def _cheap_api_hash(self):
        """bcrypt at its lowest cost for the API password.

        traefik checks the hash on every API call, and the hub makes several
        per route change: at bcrypt's default cost that is ~285 ms each. The
        password is 32 random bytes, so a slow hash adds no protection.
        """
        return bcrypt.hashpw(self.traefik_api_password.encode("utf8"), bcrypt.gensalt(rounds=4)).decode("ascii")
