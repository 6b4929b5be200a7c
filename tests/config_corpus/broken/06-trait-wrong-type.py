# upstream: start
# expect: password
# expect: DummyAuthenticator
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = 5  # <- check names this line
