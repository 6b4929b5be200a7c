# barehub developer entry points. See README.md.
SHELL := /bin/bash
PY ?= /usr/bin/python3
BUILD := build
VENV := .venv-test
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/barehub/__init__.py)

.PHONY: help try try-stop apt-deps test test-deps wheels channel installer test-installer lint clean

help:
	@echo "make try        a real barehub in a throwaway systemd container (make try-stop ends it)"
	@echo "make test       install what the tests need, then run them all"
	@echo "make lock       regenerate construct/pypi.lock from its roots"
	@echo "make channel    build the barehub conda package offline into $(BUILD)/channel"
	@echo "make installer  build the constructor installer (needs constructor + conda-forge)"
	@echo "make installer FLAVOR=slurm   the same for a flavor (flavors/slurm.yaml, docs/flavors.md)"
	@echo "make wheels     download the pinned hub environment as wheels into $(BUILD)/wheels"
	@echo "make bench      run the benchmarks (benchmarks/README.md), results in $(BUILD)/bench"

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
installer:
	$(if $(shell command -v constructor 2>/dev/null),,$(error make installer: constructor is not on PATH and only conda-forge ships it - not reachable here. Get it with 'conda install -c conda-forge constructor' where conda-forge is reachable or build the installer in release CI))
	$(MAKE) channel
ifeq ($(FLAVOR),)
	BAREHUB_CHANNEL=$(abspath $(BUILD)/channel) constructor construct/ --output-dir $(BUILD)/installer
else
	@# A flavor (flavors/$(FLAVOR).yaml, docs/flavors.md): the base definition plus the flavor's
	@# packages and examples, rendered into $(BUILD)/flavors/$(FLAVOR)/construct.yaml.
	@# constructor's own python has PyYAML and Jinja2, which the renderer needs.
	$$(dirname $$(command -v constructor))/python scripts/flavor.py render $(FLAVOR) --channel $(abspath $(BUILD)/channel)
	constructor $(BUILD)/flavors/$(FLAVOR)/ --output-dir $(BUILD)/installer
endif

# Regenerate flavors/$(FLAVOR).pypi.lock: the flavor's pins resolved on top of construct/pypi.lock.
.PHONY: flavor-lock
flavor-lock:
	$(if $(FLAVOR),,$(error usage: make flavor-lock FLAVOR=<name of a flavors/*.yaml file>))
	@# the test venv has PyYAML (make test-deps); the lock itself is resolved with $(PY)
	$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PY)) scripts/flavor.py lock $(FLAVOR) --python $(PY)

# A real self-extracting installer with constructor's options and post_install
# contract, for tests: a venv from $(PY) with the wheels installed offline
# (scripts/build_test_installer.py). Not the product: see `make installer`.
test-installer: wheels
	$(PY) scripts/build_test_installer.py --version $(VERSION) --wheels $(BUILD)/wheels \
	    --requirements construct/pypi.lock --requirements tests/singleuser-requirements.txt \
	    --python $(PY) --out $(BUILD)/test-installer/barehub-$(VERSION)-Linux-x86_64.sh

# Regenerate construct/pypi.lock from its `# roots:` line in a fresh venv.
.PHONY: lock
lock:
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
    slurm-wlm munge wrk nginx-light
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
