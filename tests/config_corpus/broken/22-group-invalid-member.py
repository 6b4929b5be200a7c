# upstream: start
# expect: load_groups
# expect: not valid
c.JupyterHub.load_groups = {"physics": {"users": ["alice/../root"]}}  # <- check names this line
