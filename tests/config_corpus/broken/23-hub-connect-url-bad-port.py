# upstream: spawn
# spawn-with: jupyterhub-singleuser
# Only the user's server parses this URL (to reach the hub API), so every spawn fails.
# expect: hub_connect_url
c.JupyterHub.hub_connect_url = "http://10.0.0.1:eighty/"  # <- check names this line
