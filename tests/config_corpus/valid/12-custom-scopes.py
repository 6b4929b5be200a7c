c.JupyterHub.authenticator_class = "null"  # names that need no system account
c.JupyterHub.custom_scopes = {
    "custom:dashboards:view": {"description": "View the site's dashboards"},
}
c.JupyterHub.load_roles = [
    {"name": "dash", "users": ["alice"], "scopes": ["custom:dashboards:view"]},
]
