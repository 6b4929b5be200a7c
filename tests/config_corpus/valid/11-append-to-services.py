# Adding to what earlier files set, the way the shipped examples do.
c.JupyterHub.services.append({"name": "sleeper2", "command": ["/bin/sleep", "3600"]})
c.JupyterHub.load_roles.append({"name": "sleeper2", "services": ["sleeper2"], "scopes": ["list:users"]})
