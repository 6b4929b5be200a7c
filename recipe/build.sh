#!/usr/bin/env bash
# Build script of recipe/recipe.yaml: installs barehub into the host prefix
# without pip (no python in the host env, see recipe.yaml for the reasons).
# rattler-build runs it in $SRC_DIR (the filtered copy of the repository) with
# PREFIX and PKG_VERSION set.
set -euo pipefail

# rattler-build keeps only the `site-packages/...` part of these paths for a
# noarch: python package; the installer maps it to lib/pythonX.Y/site-packages.
site="$PREFIX/site-packages"
pkg="$site/barehub"

test -f src/barehub/__init__.py || { echo "build.sh: src/barehub missing in $PWD" >&2; exit 1; }
test -f src/barehub/cli.py || { echo "build.sh: src/barehub/cli.py (entry point) missing" >&2; exit 1; }

mkdir -p "$pkg"
cp -R src/barehub/. "$pkg/"
# Same place as in the wheel (pyproject.toml force-includes templates/ there);
# the code finds them as importlib.resources.files("barehub") / "templates".
if [ -d templates ]; then
    mkdir -p "$pkg/templates"
    cp -R templates/. "$pkg/templates/"
fi
find "$pkg" \( -name __pycache__ -o -name '*.py[co]' \) -prune -exec rm -rf {} +

# Installed-distribution metadata, as pip would write it, so that
# importlib.metadata, `pip list` and `pip check` see barehub. No RECORD on
# purpose (PEP 627): pip then refuses to uninstall a conda-managed package.
# Keep Requires-Dist in sync with [project] dependencies in pyproject.toml and
# entry_points.txt with [project.scripts] (tests/test_recipe.py checks both).
dist="$site/barehub-${PKG_VERSION}.dist-info"
mkdir -p "$dist"
cat > "$dist/METADATA" <<EOF
Metadata-Version: 2.1
Name: barehub
Version: ${PKG_VERSION}
Summary: A minimal, unopinionated JupyterHub distribution: hub + traefik under systemd
License: BSD-3-Clause
Requires-Python: >=3.11
Requires-Dist: jinja2>=3.1
EOF
printf 'conda\n' > "$dist/INSTALLER"
cat > "$dist/entry_points.txt" <<'EOF'
[console_scripts]
barehub = barehub.cli:main
EOF
