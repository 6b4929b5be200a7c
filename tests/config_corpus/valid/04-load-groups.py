c.JupyterHub.authenticator_class = "null"  # names that need no system account
c.JupyterHub.load_groups = {
    "physics": {"users": ["alice", "bob"], "properties": {"partition": "gpu"}},
    "chemistry": {"users": []},
}
