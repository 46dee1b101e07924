# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# two stamps: a venv `make run` made gets the dev tools added by the first `make test`
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.installed-dev-stamp

.PHONY: run test install dev-install system-deps lint format lock bench clean

# The runtime lock only: no test tool, linter or type checker in what `make run` serves from.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The dev lock pins every runtime package at the runtime lock's version, and adds the tools.
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/python -m pip install -q -r requirements-dev.lock
	touch $(DEV_STAMP)

dev-install: $(DEV_STAMP)

# Debian packages some tests use as real peers (Alertmanager); needs root, else those tests skip
system-deps:
	@bash scripts/install-debian-packages.sh || echo "make: could not install Debian packages (not root?); the tests that need them will skip"

run: install
	@test -f nachtwacht.yaml || $(BIN)/nachtwacht init --output nachtwacht.yaml
	$(BIN)/nachtwacht serve --config nachtwacht.yaml

# Parallel workers (pytest-xdist); `serial`-marked tests stay on one worker, in turn.
# Each worker has its own store templates, port block and tmp dirs. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3

test: dev-install system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	@# mypy (a minute cold) runs beside the suite, which mostly waits; its report follows the suite's
	@$(BIN)/mypy > .mypy-report 2>&1 & mypy=$$!; \
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup; tests=$$?; \
	wait $$mypy; types=$$?; cat .mypy-report; rm -f .mypy-report; \
	test $$tests -eq 0 && test $$types -eq 0

lint: dev-install
	$(BIN)/ruff check src tests bench

format: dev-install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Re-pin every dependency after changing pyproject.toml: the runtime first, then the dev
# tools on top, constrained to the runtime's pins so the two locks agree (tests/test_locks.py).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -e .
	{ echo '# Runtime dependencies, pinned: what `make run` installs. Regenerate both locks: make lock'; .lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock
	.lock-venv/bin/pip install -q -c requirements.lock -e '.[dev]'
	{ echo '# Runtime + dev dependencies, pinned (the runtime pins of requirements.lock): what `make test` installs. Regenerate: make lock'; .lock-venv/bin/pip freeze --exclude-editable; } > requirements-dev.lock
	rm -rf .lock-venv

bench: install
	$(BIN)/python bench/probes.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
