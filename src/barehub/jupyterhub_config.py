# barehub's base hub configuration, started by jupyterhub.service.
# Do not edit: it is replaced by every upgrade. Put your configuration in
# $BAREHUB_BASE/jupyterhub_config.d/*.py; those files are loaded after this
# one, in lexicographic order, and can override anything set here.
import os

from barehub.hubconfig import apply

apply(get_config(), os.environ.get("BAREHUB_BASE"))  # noqa: F821 (get_config is injected by traitlets)
