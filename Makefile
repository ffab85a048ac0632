# One entry point for a new machine: every target installs what it needs first.
#   make test   the checks (make lint), then the tests (they start their own Prefect server, Azurite, gateway)
#   make lint   ruff (lint and format) and mypy; `make format` rewrites what ruff format would change
#   make demo   run the whole pipeline locally, until Ctrl-C (see README.md); make demo-once: scenarios only
#   make stack-scale   Prefect on PostgreSQL + Redis, flows on a work pool, the gateway, until Ctrl-C;
#                      options: make stack-scale SCALE_ARGS="--workers 3" (see docs/scaling.md)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The IaC scanner's own venv: its pins clash with Prefect's (see requirements-iac.txt).
IAC_VENV ?= .venv-iac

# The Python language worker for 3.13+ (azure-functions-runtime) indexes function_app.py in a test.
# It needs Python 3.13, so its venv is built only where one is found; the test skips otherwise.
PYTHON313 ?= $(shell for p in python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13); do \
	$$p -c '' >/dev/null 2>&1 && { echo $$p; break; }; done)
INDEXER_VENV := .venv-py313

.PHONY: install indexer scale-services stack-scale lint format test demo demo-once clean

install: $(VENV)/.installed node_modules/.installed $(IAC_VENV)/.installed indexer

indexer:
ifneq ($(PYTHON313),)
	@$(MAKE) --no-print-directory $(INDEXER_VENV)/.installed
endif

$(INDEXER_VENV)/.installed: requirements.txt
	$(PYTHON313) -m venv $(INDEXER_VENV)
	$(INDEXER_VENV)/bin/python -m pip install --quiet -r requirements.txt azure-functions-runtime==1.3.0
	@touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# The project itself, so scripts and tests import its packages without touching sys.path.
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

$(IAC_VENV)/.installed: requirements-iac.txt
	test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to install Azurite: install Node.js (Azurite asks for 22 or newer) and npm"; exit 1; }
	npm ci --no-audit --no-fund
	@touch $@

# PostgreSQL and Redis for the scale stack, from Debian's packages; silent when already there.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
scale-services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "Install PostgreSQL (14.9+) and Redis with your package manager"; exit 1; }; \
	  echo "Installing PostgreSQL and Redis (apt-get install postgresql redis-server)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; }

stack-scale: install scale-services
	$(PY) -m devstack.scale_stack $(SCALE_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install scale-services lint
	$(PY) -m pytest -n 2 --dist loadfile --durations 15

# The demo needs only the Python requirements and Azurite. Options: make demo DEMO_ARGS="--prefect-port 4201"
demo: $(VENV)/.installed node_modules/.installed
	$(PY) -m demo $(DEMO_ARGS)

demo-once: $(VENV)/.installed node_modules/.installed
	$(PY) -m demo --once $(DEMO_ARGS)

clean:
	rm -rf .local .pytest_cache
