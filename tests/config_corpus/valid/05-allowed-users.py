c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = "a-long-shared-password-for-the-workshop"
c.Authenticator.allowed_users = {"alice", "bob"}
