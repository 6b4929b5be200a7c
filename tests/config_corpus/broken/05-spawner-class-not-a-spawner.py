# upstream: start
# expect: spawner_class


class NotASpawner:
    pass


c.JupyterHub.spawner_class = NotASpawner  # <- check names this line
