# upstream: spawn
# expect: cmd
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = 5  # <- check names this line
