# upstream: start
# expect: services
# expect: nosuchuser
c.JupyterHub.services = [
    {"name": "stats", "command": ["/bin/sleep", "3600"], "user": "nosuchuser"},  # <- check names this line
]
