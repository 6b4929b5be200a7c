# upstream: start
# expect: SyntaxError
c.Spawner.default_url = "/lab"
c.Authenticator.allowed_users = {"alice", "bob"  # <- check names this line
