# upstream: start
# expect: admin_users
# expect: not valid
c.Authenticator.admin_users = {"alice/../root"}  # <- check names this line
