# upstream: start
# expect: NameError
# expect: allowed
c.Authenticator.allowed_users = allowed  # <- check names this line
