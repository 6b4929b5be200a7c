# An external service the hub only knows by its token (a monitoring job, say).
c.JupyterHub.services = [
    {"name": "monitor", "api_token": "monitor-token-0123456789abcdef0123456789abcdef"},
]
c.JupyterHub.load_roles = [{"name": "monitor", "services": ["monitor"], "scopes": ["read:metrics"]}]
