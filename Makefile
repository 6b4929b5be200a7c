# barehub developer entry points. See README.md.
SHELL := /bin/bash
PY ?= /usr/bin/python3
BUILD := build
VENV := .venv-test
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/barehub/__init__.py)
# Python for scripts/ (lockcheck, flavor, bump, release: ruamel.yaml, jinja2, packaging,
# scripts/requirements.txt): the test venv once `make test-deps` made it, else $(PY).
SCRIPTS_PY ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PY))

.PHONY: help try try-stop apt-deps test test-deps wheels channel installer test-installer lint clean version docs

help:
	@echo "make try        a real barehub in a throwaway systemd container (make try-stop ends it)"
	@echo "make test       install what the tests need, then run them all"
	@echo "make lock       regenerate construct/pypi.lock from its roots, then the flavor locks"
	@echo "make channel    build the barehub conda package offline into $(BUILD)/channel"
	@echo "make installer  build the constructor installer (needs constructor + conda-forge)"
	@echo "make installer FLAVOR=slurm   the same for a flavor (flavors/slurm.yaml, docs/flavors.md)"
	@echo "make installer PLATFORM=linux-ppc64le CONDA_STANDALONE=...   a cross build (docs/releasing.md)"
	@echo "make version VERSION=YYYY.MM.N   set the release version everywhere it is spelled out"
	@echo "make wheels     download the pinned hub environment as wheels into $(BUILD)/wheels"
	@echo "make bench      run the benchmarks (benchmarks/README.md), results in $(BUILD)/bench"
	@echo "make docs       regenerate docs/reference/ (barehub.toml settings, the barehub command) from the code"

docs:
	$(SCRIPTS_PY) scripts/docs_reference.py

channel:
	@# Tool venv from $(PY) with the pinned rattler tools; pip runs only when they are missing.
	@test -x $(BUILD)/tools-venv/bin/python || $(PY) -m venv $(BUILD)/tools-venv
	@$(BUILD)/tools-venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("py-rattler-build") != "0.73.0" or m.version("py-rattler") != "0.28.0")' 2>/dev/null \
	  || $(BUILD)/tools-venv/bin/python -m pip install --quiet --disable-pip-version-check py-rattler-build==0.73.0 py-rattler==0.28.0
	@# Always rebuilds (sub-second): the channel always matches the current sources.
	$(BUILD)/tools-venv/bin/python scripts/build_channel.py --channel $(BUILD)/channel

# Wheels of everything in construct/pypi.lock (binary only, for this machine's
# CPython and platform) plus barehub's own wheel. Once all are there, pip
# finds them offline in $(BUILD)/wheels and downloads nothing.
wheels:
	@mkdir -p $(BUILD)/wheels
	@$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --no-index --find-links $(BUILD)/wheels --dest $(BUILD)/wheels -r construct/pypi.lock 2>/dev/null \
	  || $(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --dest $(BUILD)/wheels -r construct/pypi.lock
	@# test-only single-user server (jupyter_server), constrained by the lock
	@$(PY) -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-index \
	    --find-links $(BUILD)/wheels --dest $(BUILD)/wheels -c construct/pypi.lock -r tests/singleuser-requirements.txt 2>/dev/null \
	  || $(PY) -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
	    --dest $(BUILD)/wheels -c construct/pypi.lock -r tests/singleuser-requirements.txt
	@# barehub's build backend, so that a barehub wheel builds offline (tests/system/test_upgrade.py
	@# builds a second release from a copy of the sources)
	@$(PY) -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-index \
	    --find-links $(BUILD)/wheels --dest $(BUILD)/wheels hatchling==1.33.0 2>/dev/null \
	  || $(PY) -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
	    --dest $(BUILD)/wheels hatchling==1.33.0
	@# each flavor's additions (flavors/*.pypi.lock), for the use-case tests
	@for lock in flavors/*.pypi.lock; do \
	  $(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --no-index \
	    --find-links $(BUILD)/wheels --dest $(BUILD)/wheels -r $$lock 2>/dev/null \
	  || $(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --dest $(BUILD)/wheels -r $$lock || exit 1; done
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir $(BUILD)/wheels .

# constructor is only on conda-forge, which dev machines and CI cannot reach:
# without it, stop at once with one line rather than build something else.
#
# One output directory per installer and platform, build/installer/<installer>-<platform>/:
# constructor writes fixed names there (lockfile.base.txt, pkg-list.base.txt,
# licenses.json), so two builds into one directory would overwrite each other.
# PLATFORM defaults to this machine's; another one is a cross build, which needs
# CONDA_STANDALONE, a conda-standalone binary for that platform (it is embedded in the
# installer). scripts/release.py check-build then checks what was built.
NATIVE_PLATFORM := $(shell uname -m | sed 's/^x86_64$$/64/; s/^/linux-/')
PLATFORM ?= $(NATIVE_PLATFORM)
CONDA_STANDALONE ?=
INSTALLER_NAME = barehub$(if $(FLAVOR),-$(FLAVOR))
INSTALLER_DIR = $(BUILD)/installer/$(INSTALLER_NAME)-$(PLATFORM)
CONSTRUCTOR_ARGS = --output-dir $(INSTALLER_DIR) --platform $(PLATFORM)$(if $(CONDA_STANDALONE), --conda-exe $(abspath $(CONDA_STANDALONE)))
installer:
	$(if $(shell command -v constructor 2>/dev/null),,$(error make installer: constructor is not on PATH and only conda-forge ships it - not reachable here. Get it with 'conda install -c conda-forge constructor' where conda-forge is reachable or build the installer in release CI))
	$(if $(filter $(PLATFORM),linux-64 linux-aarch64 linux-ppc64le),,$(error make installer: PLATFORM=$(PLATFORM) is not one barehub ships (linux-64, linux-aarch64, linux-ppc64le)))
	$(if $(or $(CONDA_STANDALONE),$(filter $(PLATFORM),$(NATIVE_PLATFORM))),,$(error make installer PLATFORM=$(PLATFORM): this machine is $(NATIVE_PLATFORM), so this is a cross build and needs CONDA_STANDALONE=<conda-standalone for $(PLATFORM)>, e.g. from 'CONDA_SUBDIR=$(PLATFORM) conda create -p DIR --no-deps conda-standalone' (DIR/standalone_conda/conda.exe)))
	$(MAKE) channel
	rm -rf $(INSTALLER_DIR)
	mkdir -p $(INSTALLER_DIR)
ifeq ($(FLAVOR),)
	BAREHUB_CHANNEL=$(abspath $(BUILD)/channel) constructor construct/ $(CONSTRUCTOR_ARGS)
else
	@# A flavor (flavors/$(FLAVOR).yaml, docs/flavors.md): the base definition plus the flavor's
	@# packages and examples, rendered into $(BUILD)/flavors/$(FLAVOR)/construct.yaml.
	@# constructor's own python has ruamel.yaml and Jinja2, which the renderer needs.
	$$(dirname $$(command -v constructor))/python scripts/flavor.py render $(FLAVOR) --channel $(abspath $(BUILD)/channel)
	constructor $(BUILD)/flavors/$(FLAVOR)/ $(CONSTRUCTOR_ARGS)
endif
	$$(dirname $$(command -v constructor))/python scripts/release.py check-build $(INSTALLER_DIR) --platform $(PLATFORM) $(if $(FLAVOR),--flavor $(FLAVOR))

# Set the release version everywhere it is spelled out (scripts/bump.py set-version):
# src/barehub/__init__.py, pyproject.toml, construct.yaml (version, default_prefix,
# the barehub pin), recipe/recipe.yaml and the README's quick start.
version:
	$(if $(filter command line,$(origin VERSION)),,$(error usage: make version VERSION=YYYY.MM.N (now $(VERSION))))
	$(SCRIPTS_PY) scripts/bump.py set-version $(VERSION)

# Regenerate flavors/$(FLAVOR).pypi.lock: the flavor's pins resolved on top of construct/pypi.lock.
.PHONY: flavor-lock
flavor-lock:
	$(if $(FLAVOR),,$(error usage: make flavor-lock FLAVOR=<name of a flavors/*.yaml file>))
	@# scripts/flavor.py needs ruamel.yaml (the test venv has it); the lock itself is resolved with $(PY)
	$(SCRIPTS_PY) scripts/flavor.py lock $(FLAVOR) --python $(PY)

# A real self-extracting installer with constructor's options and post_install
# contract, for tests: a venv from $(PY) with the wheels installed offline
# (scripts/build_test_installer.py). Not the product: see `make installer`.
test-installer: wheels
	$(PY) scripts/build_test_installer.py --version $(VERSION) --wheels $(BUILD)/wheels \
	    --requirements construct/pypi.lock --requirements tests/singleuser-requirements.txt \
	    --python $(PY) --out $(BUILD)/test-installer/barehub-$(VERSION)-Linux-x86_64.sh

# Regenerate construct/pypi.lock from its `# roots:` line in a fresh venv, then every
# flavor's lock on top of it (scripts/bump.py propose --apply runs this).
.PHONY: lock base-lock
lock: base-lock
	@for f in flavors/*.yaml; do f=$${f#flavors/}; $(MAKE) --no-print-directory flavor-lock FLAVOR=$${f%.yaml} || exit 1; done

base-lock:
	rm -rf $(BUILD)/lock-venv
	$(PY) -m venv $(BUILD)/lock-venv
	roots=$$(sed -n 's/^# roots: //p' construct/pypi.lock) && test -n "$$roots" \
	  && $(BUILD)/lock-venv/bin/pip install --quiet --disable-pip-version-check $$roots \
	  && { grep '^#' construct/pypi.lock; $(BUILD)/lock-venv/bin/pip freeze; } > construct/pypi.lock.tmp \
	  && mv construct/pypi.lock.tmp construct/pypi.lock
	rm -rf $(BUILD)/lock-venv

# What the tests need: Debian tools, the wheelhouse, and a test venv from
# $(PY) (not a pyenv python under /root: users' servers must be able to run it).
TRY_APT_PACKAGES := python3-pip python3-venv systemd-container debootstrap zstd
APT_PACKAGES := python3-pip python3-venv shellcheck systemd make chromium systemd-container debootstrap zstd pebble openssl sudo \
    slurm-wlm munge wrk nginx-light strace gettext-base
# Install missing Debian packages (as root): make apt-deps PKGS="..."
PKGS ?= $(APT_PACKAGES)
apt-deps:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages (tests that need them will skip): $$missing"; fi; fi

test-deps: apt-deps bench-npm
	$(MAKE) wheels
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	@echo "test venv: installing the locked hub environment and test tools"
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-index --find-links $(BUILD)/wheels \
	    -r construct/pypi.lock -r tests/singleuser-requirements.txt -r flavors/slurm.pypi.lock
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt

test: test-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Benchmarks (benchmarks/README.md): barehub against configurable-http-proxy,
# pinned in benchmarks/package-lock.json and installed with npm ci.
.PHONY: bench bench-deps bench-npm
bench-npm: benchmarks/node_modules/.package-lock.json
benchmarks/node_modules/.package-lock.json: benchmarks/package.json benchmarks/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: the benchmarks need Node.js 20 and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	cd benchmarks && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bench-deps: test-deps

# All benchmarks (< 25 min): tables on stdout, every number in $(BUILD)/bench/results-<UTC time>.json.
# BENCH_ARGS="--smoke" for a quick check, BENCH_ARGS="--only proxy -- --n 1,1000" for a part.
bench: bench-deps
	$(VENV)/bin/python benchmarks/run_all.py --out $(BUILD)/bench $(BENCH_ARGS)

# A real barehub in a throwaway systemd container, reachable from this host.
PORT ?= 8000
try:
	@$(MAKE) --no-print-directory apt-deps PKGS="$(TRY_APT_PACKAGES)"
	@$(MAKE) --no-print-directory test-installer
	$(PY) scripts/try --port $(PORT)

try-stop:
	$(PY) scripts/try --stop

clean:
	rm -rf $(BUILD) $(VENV)
