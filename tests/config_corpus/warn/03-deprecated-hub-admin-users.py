# expect: JupyterHub.admin_users is deprecated
c.JupyterHub.admin_users = {"root"}  # <- check names this line
