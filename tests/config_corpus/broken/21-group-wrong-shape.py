# upstream: start
# expect: load_groups
c.JupyterHub.load_groups = {"physics": {"users": "alice", "colour": "blue"}}  # <- check names this line
