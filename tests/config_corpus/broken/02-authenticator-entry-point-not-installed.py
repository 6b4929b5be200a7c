# upstream: start
# expect: authenticator_class
# expect: ldapauthenticator
c.JupyterHub.authenticator_class = "ldapauthenticator"  # <- check names this line
