# upstream: start
# expect: No module named 'ldap3'
import ldap3  # noqa: F401  # <- check names this line
