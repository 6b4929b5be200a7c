# upstream: start
# expect: services
# expect: /nonexistent/bin/cull
c.JupyterHub.services = [{"name": "culler", "command": ["/nonexistent/bin/cull", "--timeout=3600"]}]  # <- check names this line
