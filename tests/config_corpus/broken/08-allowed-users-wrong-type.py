# upstream: start
# expect: allowed_users
c.Authenticator.allowed_users = 5  # <- check names this line
