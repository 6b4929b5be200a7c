# upstream: start
# expect: authenticator_class
# expect: LocalProcessSpawner
c.JupyterHub.authenticator_class = "jupyterhub.spawner.LocalProcessSpawner"  # <- check names this line
