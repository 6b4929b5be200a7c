"""`make try`: one command gives a hub reachable from this host, with a demo login; `make try-stop` ends it."""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from helpers import REPO, report


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def test_try_then_try_stop(rootfs):
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "test-installer"], check=True,
                   capture_output=True)
    port = next(p for p in range(18000, 18200) if all(port_free(p + off) for off in (0, 10081, 10099)))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "try"), "--port", str(port)],
                       capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    try:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out = r.stdout
        report(f"make try (cached rootfs): up in {elapsed:.0f}s")
        url = re.search(r"URL:\s+(http://\S+)", out).group(1)
        user = re.search(r"user:\s+(\S+)", out).group(1)
        password = re.search(r"password:\s+(\S+)", out).group(1)
        assert url.endswith(f":{port}/")
        # the printed URL, from this host: log in with the printed credentials
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(url + "hub/login", timeout=10) as resp:
            assert resp.status == 200
        xsrf = next(c.value for c in jar if c.name == "_xsrf")
        form = urllib.parse.urlencode({"username": user, "password": password, "_xsrf": xsrf}).encode()
        with opener.open(urllib.request.Request(url + "hub/login?next=/hub/home", data=form), timeout=30) as resp:
            assert resp.status == 200 and user in resp.read().decode()
    finally:
        stop = subprocess.run([sys.executable, str(REPO / "scripts" / "try"), "--stop"],
                              capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "stopped and removed" in stop.stdout
    ps = subprocess.run(["pgrep", "-f", "systemd-nspawn.*barehub-try"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
