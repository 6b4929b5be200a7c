# upstream: start
# expect: load_roles
# expect: read:nonsense
c.JupyterHub.load_roles = [
    {"name": "viewer", "scopes": ["read:nonsense"], "users": []},  # <- check names this line
]
