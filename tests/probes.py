"""Availability probes, run as separate processes (also inside a container's network namespace).

    python probes.py http URL --token T --out FILE --stop-file F [--interval 0.25]
    python probes.py ws   URL --token T --out FILE --stop-file F [--interval 0.25]

`http` requests URL every interval and records each status (or the error).
`ws` starts a kernel on the user server at URL (/user/NAME/), keeps ONE
websocket to it open, and sends a kernel_info_request every interval; a
missing reply within 2 s, or a closed socket, is a failure.
Both write one JSON line per attempt to FILE and a final summary line
{"summary": {...}} once the stop file exists (or --duration passed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
import urllib.error
import urllib.request


def write(out, record):
    out.write(json.dumps(record) + "\n")
    out.flush()


def should_stop(args, t0) -> bool:
    return os.path.exists(args.stop_file) or (args.duration and time.monotonic() - t0 > args.duration)


def http_probe(args) -> dict:
    ok = failed = 0
    t0 = time.monotonic()
    with open(args.out, "a") as out:
        while not should_stop(args, t0):
            req = urllib.request.Request(args.url, headers={"Authorization": f"token {args.token}"})
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    code: int | str = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except Exception as e:  # noqa: BLE001 - refused, reset, timeout: all failures
                code = type(e).__name__
            good = code == 200
            ok, failed = ok + good, failed + (not good)
            write(out, {"t": round(time.time(), 3), "code": code})
            time.sleep(args.interval)
        summary = {"ok": ok, "failed": failed}
        write(out, {"summary": summary})
    return summary


def _msg(session: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "kernel_info_request", "username": "probe",
                   "session": session, "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell", "buffers": [],
    }


async def ws_probe_async(args) -> dict:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    base = args.url.rstrip("/")
    req = urllib.request.Request(f"{base}/api/kernels", data=b'{"name": "python3"}', method="POST",
                                 headers={"Authorization": f"token {args.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        kernel = json.loads(r.read())["id"]
    ws_url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {args.token}"}))
    session = uuid.uuid4().hex
    ok = failed = 0
    closed = False
    t0 = time.monotonic()
    with open(args.out, "a") as out:
        while not should_stop(args, t0):
            msg = _msg(session)
            result = "ok"
            try:
                await conn.write_message(json.dumps(msg))
                deadline = time.monotonic() + 2
                while True:
                    raw = await asyncio.wait_for(conn.read_message(), max(0.01, deadline - time.monotonic()))
                    if raw is None:
                        result, closed = "closed", True
                        break
                    reply = json.loads(raw)
                    if reply.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"] and \
                            reply["header"]["msg_type"] == "kernel_info_reply":
                        break
            except asyncio.TimeoutError:
                result = "timeout"
            except Exception as e:  # noqa: BLE001 - a closed socket raises
                result, closed = type(e).__name__, True
            ok, failed = ok + (result == "ok"), failed + (result != "ok")
            write(out, {"t": round(time.time(), 3), "result": result})
            if closed:
                break
            await asyncio.sleep(args.interval)
        summary = {"ok": ok, "failed": failed, "closed": closed, "kernel": kernel}
        write(out, {"summary": summary})
    conn.close()
    return summary


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["http", "ws"])
    p.add_argument("url")
    p.add_argument("--token", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--duration", type=float, default=600, help="stop by itself after this many seconds")
    args = p.parse_args(argv)
    if args.kind == "http":
        http_probe(args)
    else:
        asyncio.run(ws_probe_async(args))


def read_results(path) -> tuple[list[dict], dict | None]:
    records, summary = [], None
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "summary" in rec:
                summary = rec["summary"]
            else:
                records.append(rec)
    return records, summary


if __name__ == "__main__":
    main()
