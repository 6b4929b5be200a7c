# upstream: start
# expect: concurrent_spawn_limit
c.JupyterHub.concurrent_spawn_limit = "many"  # <- check names this line
