# The only two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DXA_DATA_DIR ?= $(CURDIR)/var
export DXA_INBOX ?= $(CURDIR)/var/inbox

.PHONY: run test messages lint typecheck unit bench soak clean install system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Test-only system packages from Debian: headless Chromium for the browser tests (Playwright's own
# browser download cannot run in a hospital network or here), docker-compose to validate
# docker-compose.yml without a Docker engine, and the tools hospitals' PDFs pass through
# (ghostscript pdfwrite / PDF/A, qpdf linearisation and object streams, poppler's cairo printer)
# to build those variants of the samples in the ingest tests. Tesseract with its English, Simplified
# Chinese and orientation data reads scanned, faxed and photographed reports (issue 14, at run time
# too: no model is downloaded), and a CJK font renders the Chinese sample reports into test scans.
system-deps:
	@need=""; command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	command -v gs >/dev/null 2>&1 || need="$$need ghostscript"; \
	command -v qpdf >/dev/null 2>&1 || need="$$need qpdf"; \
	command -v pdftocairo >/dev/null 2>&1 || need="$$need poppler-utils"; \
	command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need="$$need docker-compose"; \
	command -v tesseract >/dev/null 2>&1 || need="$$need tesseract-ocr"; \
	for lang in eng chi_sim osd; do tesseract --list-langs 2>/dev/null | grep -qx "$$lang" || need="$$need tesseract-ocr-$$(echo $$lang | tr _ -)"; done; \
	fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || need="$$need fonts-noto-cjk"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	  else echo "missing system packages:$$need (install them with apt-get as root)"; fi; \
	fi

run: $(STAMP)
	mkdir -p $(DXA_INBOX)
	$(BIN)/dxa serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

PACKAGES := settings monitor ingest db services workers web dxa

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports
	DXA_REQUIRE_SERVICES=$${DXA_REQUIRE_SERVICES:-$$( [ "$$CI" = "true" ] && echo 1 || echo 0 )} $(BIN)/pytest -q

# The long hardening runs (issue 11): 10 000 mutants through the parse child, 10 000 files through
# `dxa serve` and through Celery with 2 workers under faults (kill -9, SQLite locked, inbox disk
# full, Redis restart, a private PostgreSQL server restarted, database connections ended), 50
# signed-in users browsing. Prints one table; needs redis-server and PostgreSQL's initdb/pg_ctl
# (else the shared server, without the restart fault), and root for the tmpfs inbox.
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Messages people read: extract into web/locale/messages.pot and merge into each language's .po
# (translate the new entries there; the .po files are read directly at start, no compile step).
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _ -k N_ -k gettext -k ngettext:1,2 --no-location --sort-output -o web/locale/messages.pot .
	$(BIN)/pybabel update -i web/locale/messages.pot -d web/locale -D messages --no-fuzzy-matching

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
