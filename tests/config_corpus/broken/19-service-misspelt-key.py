# upstream: start
# expect: services
# expect: commmand
c.JupyterHub.services = [{"name": "culler", "commmand": ["python3", "-c", "pass"]}]  # <- check names this line
