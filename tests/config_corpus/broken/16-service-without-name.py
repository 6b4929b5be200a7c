# upstream: start
# expect: services
c.JupyterHub.services = [{"api_token": "a-long-enough-service-token-0123456789"}]  # <- check names this line
