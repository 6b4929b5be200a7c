# upstream: start
# expect: services
# expect: abc
c.JupyterHub.services = [{"name": "driver", "api_token": "abc"}]  # <- check names this line
