# The two commands of the README's quick start, and a few helpers.
PYTHON ?= python3

.PHONY: serve test install browser lint checks

## Install the server and start it on HOST:PORT (default http://127.0.0.1:8000).
serve: install
	$(PYTHON) run_server.py

## Install everything the tests need and run the whole suite.
test: browser
	$(PYTHON) -m pip install --quiet -e '.[test]'
	$(PYTHON) -m pytest

install:
	$(PYTHON) -m pip install --quiet -e .

# The widget's browser tests drive Debian's chromium (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# Scripted checks of a deployment: SIGKILL failover behind Debian's nginx, and a
# 10-second database outage (on a private PostgreSQL).
checks:
	@command -v nginx >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx)
	$(PYTHON) scripts/check_failover.py
	$(PYTHON) scripts/check_db_outage.py

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check server protocol tests bench run_server.py
