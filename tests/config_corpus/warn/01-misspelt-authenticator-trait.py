# expect: pasword
# expect: not recognized
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.pasword = "a-long-enough-password-0123456789"  # <- check names this line
