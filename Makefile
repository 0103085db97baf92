# The only two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DXA_DATA_DIR ?= $(CURDIR)/var
export DXA_INBOX ?= $(CURDIR)/var/inbox

.PHONY: run test lint typecheck unit bench clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser tests comes from Debian (Playwright's own download cannot run here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: $(STAMP)
	mkdir -p $(DXA_INBOX)
	$(BIN)/dxa serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy dxa ingest monitor workers db web

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/mypy dxa ingest monitor workers db web
	DXA_REQUIRE_SERVICES=$${DXA_REQUIRE_SERVICES:-$$( [ "$$CI" = "true" ] && echo 1 || echo 0 )} $(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
