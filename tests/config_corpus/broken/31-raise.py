# upstream: start
# expect: RuntimeError
# expect: the site config is missing
raise RuntimeError("the site config is missing")  # <- check names this line
