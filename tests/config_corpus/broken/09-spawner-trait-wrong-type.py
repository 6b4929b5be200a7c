# upstream: spawn
# expect: start_timeout
c.JupyterHub.spawner_class = "simple"
c.Spawner.start_timeout = "soon"  # <- check names this line
