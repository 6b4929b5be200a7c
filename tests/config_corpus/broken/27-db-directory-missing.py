# upstream: start
# expect: db_url
# expect: /nonexistent/state
c.JupyterHub.db_url = "sqlite:////nonexistent/state/jupyterhub.sqlite"  # <- check names this line
