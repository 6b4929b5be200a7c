c.Spawner.default_url = "/lab"
c.Spawner.environment = {"OMP_NUM_THREADS": "4"}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
