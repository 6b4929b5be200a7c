# expect: cookie_max_age_day
# expect: not recognized
c.JupyterHub.cookie_max_age_day = 7  # <- check names this line
