# upstream: start
# expect: load_roles
# expect: admin
c.JupyterHub.load_roles = [{"name": "admin", "scopes": ["read:users"]}]  # <- check names this line
