# A managed service (it only sleeps) with a role of its own.
c.JupyterHub.services = [{"name": "sleeper", "command": ["/bin/sleep", "3600"]}]
c.JupyterHub.load_roles = [
    {"name": "sleeper", "services": ["sleeper"], "scopes": ["list:users", "read:servers"]},
]
