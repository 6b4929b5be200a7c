# upstream: start
# expect: bind_url
c.JupyterHub.bind_url = "http://[::1:8000/"  # <- check names this line
