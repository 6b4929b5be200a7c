#!/usr/bin/env python3
"""How long the gate (`barehub check`, run by every `systemctl reload jupyterhub`) takes
on a base with many users in its database, beside the same check on an empty base.

The base is written by `barehub install --no-start` with the environment running
this script (the test venv: the pinned jupyterhub), barehub from src/. Its config.d
has what a real site has: an authenticator with allowed users, groups, a role for
them and a managed service with its role. Users are written into the hub's
database through JupyterHub's ORM (each with its default role, a spawner with a
running server record, an API token), in groups of 50.

Goal (issue 11): <= 3 s at 1,000 users on 2 cores. Printed: the median of --runs
checks for the empty base and for N users, measured one after the other in this
run, and their ratio.

    python benchmarks/check_scale.py [--smoke] [--users N] [--runs K] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 3.0

CONFIG = '''\
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = "a-long-shared-password-for-the-benchmark"
c.Authenticator.allowed_users = {"alice", "bob"}
c.Authenticator.admin_users = {"alice"}
c.JupyterHub.load_groups = {"staff": {"users": ["alice", "bob"]}}
c.JupyterHub.load_roles = [
    {"name": "staff-view", "groups": ["staff"], "scopes": ["read:users", "read:servers"]},
    {"name": "sleeper", "services": ["sleeper"], "scopes": ["list:users", "read:servers"]},
]
c.JupyterHub.services = [{"name": "sleeper", "command": ["/bin/sleep", "3600"]}]
'''


def install(base: Path) -> None:
    base.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-m", "barehub", "install", "--base", str(base),
                        "--prefix", sys.prefix, "--no-start"], env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"barehub install --no-start failed:\n{r.stdout}{r.stderr}")
    (base / "jupyterhub_config.d" / "20-site.py").write_text(CONFIG)


def populate(base: Path, n: int) -> float:
    """N users with a running server record each, and a group per 50 users."""
    sys.path.insert(0, str(REPO / "src"))
    from datetime import datetime, timezone

    from jupyterhub import orm, roles
    from jupyterhub.utils import new_token

    t0 = time.monotonic()
    db = orm.new_session_factory(f"sqlite:///{base / 'state' / 'jupyterhub.sqlite'}")()
    for role in roles.get_default_roles():  # what the hub's first start creates
        roles.create_role(db, role)
    db.add(orm.OAuthClient(identifier="jupyterhub", secret="", redirect_uri="", description="JupyterHub"))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    groups: dict[int, orm.Group] = {}
    for i in range(n):
        user = orm.User(name=f"user{i:05d}", created=now)
        db.add(user)
        db.flush()
        roles.assign_default_roles(db, user)
        group = groups.get(i // 50)
        if group is None:
            group = groups[i // 50] = orm.Group(name=f"group{i // 50:03d}")
            db.add(group)
        user.groups.append(group)
        spawner = orm.Spawner(name="", user=user, started=now, last_activity=now, state={})
        spawner.server = orm.Server(proto="http", ip="127.0.0.1", port=40000 + i % 20000,
                                    base_url=f"/user/{user.name}/", cookie_name="cookie")
        db.add(spawner)
        user.new_api_token(token=new_token(), note="bench", generated=True)
    db.commit()
    db.close()
    return time.monotonic() - t0


def time_check(base: Path, runs: int) -> tuple[float, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "barehub", "check", "--base", str(base)],
                           env=env, capture_output=True, text=True)
        times.append(time.monotonic() - t0)
        if r.returncode:
            raise RuntimeError(f"barehub check failed on {base}:\n{r.stdout}{r.stderr}")
    return statistics.median(times), times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="50 users, one run each")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    users, runs = (50, 1) if args.smoke else (args.users, args.runs)
    with tempfile.TemporaryDirectory(prefix="barehub-check-bench-") as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        install(empty)
        install(full)
        written = populate(full, users)
        # warm the page cache for both, then measure them alternately
        time_check(empty, 1)
        time_check(full, 1)
        e_med, e_all = time_check(empty, runs)
        f_med, f_all = time_check(full, runs)
    ratio = f_med / e_med if e_med else float("nan")
    print("| users in the database | barehub check, median (s) | runs (s) |")
    print("|---|---|---|")
    print(f"| 0 | {e_med:.2f} | {', '.join(f'{t:.2f}' for t in e_all)} |")
    print(f"| {users} | {f_med:.2f} | {', '.join(f'{t:.2f}' for t in f_all)} |")
    print(f"\n{users} users ÷ empty: {ratio:.2f}; goal <= {GOAL_S:.1f} s at 1,000 users: "
          f"{'met' if f_med <= GOAL_S or users < 1000 else 'missed'} ({f_med:.2f} s); "
          f"writing the users took {written:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"users": users, "empty_s": round(e_med, 3), "full_s": round(f_med, 3),
                                         "ratio": round(ratio, 3), "goal_s": GOAL_S, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
