c.JupyterHub.authenticator_class = "null"  # names that need no system account
c.JupyterHub.load_groups = {"staff": {"users": ["alice"]}}
c.JupyterHub.load_roles = [
    {"name": "staff-view", "groups": ["staff"], "scopes": ["read:users", "read:servers"]},
    {"name": "self-tokens", "users": ["bob"], "scopes": ["tokens!user"]},
]
