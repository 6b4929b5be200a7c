# upstream: start
# expect: load_groups
# expect: does not exist on the system
# JupyterHub's default authenticator (PAM) needs a system account for every user it adds.
c.JupyterHub.load_groups = {"physics": {"users": ["nosuchuser-35"]}}  # <- check names this line
