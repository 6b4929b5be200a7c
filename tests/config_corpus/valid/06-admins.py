c.JupyterHub.authenticator_class = "null"  # names that need no system account
c.Authenticator.admin_users = {"alice"}
c.Authenticator.allowed_users = {"bob"}
