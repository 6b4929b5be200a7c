# upstream: start
# expect: hub_bind_url
c.JupyterHub.hub_bind_url = "http://127.0.0.1:99999"  # <- check names this line
