"""A light stand-in for many single-user servers, and the Spawner that drives it.

One tornado process on one port plays every user's server: a request to
/user/<name>/... is answered only while <name>'s server is "running" in its
table, so 1,000 servers cost a few MB instead of 1,000 processes.

    python fake_singleuser.py --port P        # serve; control API under /_fake/

Control API (what FakeSpawner calls):
    POST   /_fake/servers/<name>   start <name>'s server (201)
    GET    /_fake/servers/<name>   200 if running, 404 if not
    DELETE /_fake/servers/<name>   stop it (204)
    GET    /_fake/servers          {"running": [...]}

A running server also starts pretend kernels (POST .../api/kernels) whose
websocket (.../api/kernels/<id>/channels) answers kernel_info_request, for the
websocket probe of tests/probes.py.

A running server answers /user/<name>/api/status (and any other path under its
prefix) with 200 and a small JSON body, like jupyter_server's status endpoint;
a stopped one answers 503 (traefik would give 502 for a dead backend). The hub's
own check of a server (`wait_up`, any non-5xx response) therefore fails for a
server that is not running, as it would for a real one.

FakeSpawner (c.JupyterHub.spawner_class = "fake_singleuser.FakeSpawner") starts,
polls and stops entries of that table; poll really asks the fake process, so a
hub restart re-adopts exactly the servers that still run there.
"""

from __future__ import annotations

import argparse
import json
import time

SERVER_PREFIX = "/user/"


# --------------------------------------------------------------------------- the fake server process

def make_app():
    import uuid

    from tornado import web, websocket

    running: dict[str, float] = {}

    class Control(web.RequestHandler):
        def get(self, name):
            if name in running:
                self.finish({"name": name, "started": running[name]})
            else:
                self.send_error(404)

        def post(self, name):
            running.setdefault(name, time.time())
            self.set_status(201)
            self.finish({"name": name})

        def delete(self, name):
            running.pop(name, None)
            self.set_status(204)
            self.finish()

    class ListAll(web.RequestHandler):
        def get(self):
            self.finish({"running": sorted(running)})

    class UserServer(web.RequestHandler):
        def prepare(self):
            if self.path_args[0] not in running:
                self.send_error(503)

        def get(self, name, rest):
            self.set_header("X-JupyterHub-Version", self.application.settings.get("hub_version", ""))
            self.finish(json.dumps({"started": running[name], "last_activity": running[name],
                                    "connections": 0, "kernels": 0, "user": name}))

        post = head = get

    try:
        from jupyterhub import __version__ as hub_version
    except ImportError:
        hub_version = ""
    class Kernels(web.RequestHandler):
        """POST .../api/kernels: a pretend kernel (what tests/probes.py's ws probe starts)."""

        def post(self, name):
            if name not in running:
                return self.send_error(503)
            self.set_status(201)
            self.finish({"id": uuid.uuid4().hex, "name": "python3"})

    class Channels(websocket.WebSocketHandler):
        """The kernel's websocket: answers each kernel_info_request with a kernel_info_reply."""

        def open(self, name, kernel):
            if name not in running:
                self.close(1011, "server not running")

        def on_message(self, message):
            msg = json.loads(message)
            if msg.get("header", {}).get("msg_type") == "kernel_info_request":
                self.write_message(json.dumps({
                    "header": {"msg_id": uuid.uuid4().hex, "msg_type": "kernel_info_reply"},
                    "parent_header": msg["header"], "metadata": {}, "content": {"status": "ok"},
                    "channel": "shell", "buffers": []}))

    return web.Application(hub_version=hub_version, handlers=[
        (r"/_fake/servers", ListAll),
        (r"/_fake/servers/([^/]+)", Control),
        (SERVER_PREFIX + r"([^/]+)/api/kernels", Kernels),
        (SERVER_PREFIX + r"([^/]+)/api/kernels/([^/]+)/channels", Channels),
        (SERVER_PREFIX + r"([^/]+)(/.*)?", UserServer),
    ])


def serve(port: int, address: str = "127.0.0.1") -> None:
    import asyncio

    async def main():
        app = make_app()
        app.listen(port, address, backlog=1024)
        print(f"fake single-user servers on http://{address}:{port}{SERVER_PREFIX}<name>/", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# --------------------------------------------------------------------------- the Spawner (imported by the hub)

try:
    from jupyterhub.spawner import Spawner
    from traitlets import Unicode
except ImportError:  # the fake server alone needs neither
    Spawner = None

if Spawner is not None:
    class FakeSpawner(Spawner):
        """Starts, polls and stops servers in the fake's table (no process per user)."""

        fake_url = Unicode("http://127.0.0.1:8888", config=True,
                           help="where fake_singleuser.py listens")

        _client = None

        @classmethod
        def client(cls):
            from tornado.httpclient import AsyncHTTPClient

            if cls._client is None:
                # its own client: the hub's shared one allows only 10 requests at once
                cls._client = AsyncHTTPClient(force_instance=True, max_clients=64)
            return cls._client

        async def _call(self, method: str) -> int:
            from tornado.httpclient import HTTPClientError

            url = f"{self.fake_url}/_fake/servers/{self.user.name}"
            try:
                r = await self.client().fetch(url, method=method, body=b"" if method == "POST" else None,
                                              request_timeout=30)
                return r.code
            except HTTPClientError as e:
                return e.code

        async def start(self):
            code = await self._call("POST")
            if code != 201:
                raise RuntimeError(f"fake server refused to start {self.user.name}: HTTP {code}")
            host, _, port = self.fake_url.split("://", 1)[1].partition(":")
            return host, int(port)

        async def poll(self):
            code = await self._call("GET")
            if code == 200:
                return None
            if code == 404:
                return 0
            raise RuntimeError(f"fake server answered HTTP {code} for {self.user.name}")

        async def stop(self, now=False):
            await self._call("DELETE")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", default="127.0.0.1")
    serve(ap.parse_args().port, ap.parse_args().address)
