# upstream: start
# expect: spawner_class
# expect: NoSuchSpawner
c.JupyterHub.spawner_class = "jupyterhub.spawner.NoSuchSpawner"  # <- check names this line
