# upstream: start
# expect: load_roles
# expect: ghost
c.JupyterHub.load_roles = [
    {"name": "reader", "scopes": ["read:users"], "services": ["ghost"]},  # <- check names this line
]
