#!/bin/bash
# barehub post-install hook, run by the constructor installer after the
# environment is extracted: cwd is $PREFIX and the shell runs under `set -eu`.
# It may run again (installer -u or -f); `barehub install` is idempotent.
#
# The base directory is the parent of envs/<version>: the default prefix
# /opt/barehub/envs/<version> gives /opt/barehub. Set BAREHUB_BASE to use
# another base with any prefix. BAREHUB_NO_START=1 writes files only.
set -eu

version=${INSTALLER_VER:?INSTALLER_VER is not set: run this hook through the barehub installer}
prefix=${PREFIX:?PREFIX is not set: run this hook through the barehub installer}
prefix=${prefix%/}

if [ -n "${BAREHUB_BASE:-}" ]; then
    base=$BAREHUB_BASE
else
    case "$prefix" in
        */envs/"$version") base=${prefix%/envs/"$version"} ;;
        *)
            cat >&2 <<MSG
barehub: cannot tell the base directory from the prefix $prefix.
An install prefix must be BASE/envs/$version (the default is /opt/barehub/envs/$version),
or the base must be given explicitly. Either run
    sudo bash ${INSTALLER_PATH:-the installer} -b -p /opt/barehub/envs/$version
or
    sudo BAREHUB_BASE=/path/to/base bash ${INSTALLER_PATH:-the installer} -b -p $prefix
MSG
            exit 1 ;;
    esac
fi
[ -n "$base" ] || base=/

set -- install --base "$base" --prefix "$prefix"
if [ "${BAREHUB_NO_START:-0}" = 1 ]; then
    set -- "$@" --no-start
fi

echo "barehub: running $prefix/bin/python -m barehub $*"
"$prefix/bin/python" -m barehub "$@"
