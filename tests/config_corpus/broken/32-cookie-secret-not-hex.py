# upstream: start
# expect: cookie_secret
c.JupyterHub.cookie_secret = "not-a-hex-secret"  # <- check names this line
