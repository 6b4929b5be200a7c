c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
