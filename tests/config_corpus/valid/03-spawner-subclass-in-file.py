from jupyterhub.spawner import SimpleLocalProcessSpawner


class SiteSpawner(SimpleLocalProcessSpawner):
    """A site's spawner, defined right here."""

    def get_env(self):
        env = super().get_env()
        env["SITE"] = "example"
        return env


c.JupyterHub.spawner_class = SiteSpawner
c.SiteSpawner.start_timeout = 90
