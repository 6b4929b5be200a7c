# upstream: start
# expect: spawner_class
# expect: No module named 'does'
c.JupyterHub.spawner_class = "does.not.Exist"  # <- check names this line
