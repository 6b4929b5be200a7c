# upstream: start
# expect: db_url
# expect: No module named 'psycopg'
c.JupyterHub.db_url = "postgresql://hub:secret@db.example.org/jupyterhub"  # <- check names this line
