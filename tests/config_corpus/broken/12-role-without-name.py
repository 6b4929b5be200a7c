# upstream: start
# expect: load_roles
c.JupyterHub.load_roles = [{"scopes": ["read:users"]}]  # <- check names this line
