# The one place for commands; CI (.ci/run) calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test unit lint typecheck rabbitmq browser-tools bench docs clean cluster-test screenshots

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,docs]'
	touch $(STAMP)

demo: $(STAMP)  ## the Hello/World tutorial in one process, on the in-memory broker
	$(BIN)/python samples/demo.py

# --tavrida2-require-rabbitmq: a test that needs RabbitMQ fails, not skips, without it
test: $(STAMP) docs lint rabbitmq browser-tools  ## docs, lint, type-check, then every test (RabbitMQ and browser ones included)
	$(BIN)/python -m pytest --tavrida2-require-rabbitmq

unit: $(STAMP)  ## tests that need no broker
	$(BIN)/python -m pytest -m "not rabbitmq"

# -m overrides setup.cfg's -m "not cluster"
cluster-test: $(STAMP)  ## a 3-node RabbitMQ cluster of its own, its queue leader killed under load (docs/scaling.md)
	$(BIN)/python -m pytest -m cluster tests/cluster

screenshots: $(STAMP) rabbitmq browser-tools  ## the dashboard chapter's pictures (docs/_static/dashboard-*.png), from the browser test
	TAVRIDA2_SCREENSHOTS=docs/_static $(BIN)/python -m pytest --tavrida2-require-rabbitmq tests/integration/test_dashboard_browser.py

lint: $(STAMP)
	$(BIN)/ruff check tavrida2 tests samples bench
	$(BIN)/mypy tavrida2

rabbitmq:  ## make sure the broker at 127.0.0.1:5672 answers (start it if installed), management API on
	@bash scripts/ensure-rabbitmq.sh
	@bash scripts/ensure-rabbitmq-management.sh

browser-tools:  ## Debian's chromium (the dashboard's browser tests) and graphviz (topology pictures)
	@bash scripts/ensure-browser-tools.sh

# -E reads every page again: an incremental build would not repeat the warnings of
# pages it does not re-read, and a second `make docs` would pass.
docs: $(STAMP)  ## the Sphinx docs in docs/_build/html; a warning fails the build
	$(BIN)/sphinx-build -E -W --keep-going -b html docs docs/_build/html

bench: $(STAMP) rabbitmq  ## tavrida2 vs raw pika / aio-pika / aiormq and the peers, one run (docs/benchmarks.md)
	$(BIN)/python bench/run.py --peers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
