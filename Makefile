# Two commands on a fresh machine with Python 3.10+ and make:
#   make demo   the reference server tour
#   make test   ruff, mypy --strict on hookkit/, the whole pytest suite on
#               gunicorn 27, and the version-sensitive tests on 26 and 25
# make test-fast runs the unit tests alone (no test marked integration).
# make docs builds the documentation site into site/ (mkdocs --strict; make
# test builds it too, in tests/test_docs.py); make docs-reference rewrites
# docs/reference/ from the code's tables.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck pytest compat install clean bench docs docs-reference

# Older gunicorn releases the version-sensitive tests (marked compat) also run against.
COMPAT_GUNICORN := 26.2.0 25.3.0

# pytest-xdist workers: one per core, at least 3. The integration tests mostly
# wait on the processes they start, so on 2 cores 3 workers beat 2 (whole
# suite: 1 process 938 s, -n 2 400 s, -n 3 296 s, -n 4 328 s and a flaky
# timing). worksteal evens out the long tests. PYTEST_WORKERS=0: no xdist.
PYTEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(max(3, os.cpu_count() or 1))')
XDIST = -n $(PYTEST_WORKERS) --dist worksteal

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hookkit demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy hookkit

pytest: $(STAMP)
	$(BIN)/pytest $(XDIST)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not integration"

# One venv per gunicorn release, beside the main one.
.venv-gunicorn-%/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-gunicorn-$*
	.venv-gunicorn-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-gunicorn-$*/bin/python -m pip install --quiet -e '.[test]' 'gunicorn==$*'
	touch $@

compat: $(foreach v,$(COMPAT_GUNICORN),.venv-gunicorn-$(v)/.installed)
	for v in $(COMPAT_GUNICORN); do \
		echo "== gunicorn $$v"; \
		.venv-gunicorn-$$v/bin/pytest -q -p no:cacheprovider $(XDIST) -m compat -k "not recycling" \
			|| exit 1; \
	done

test: lint typecheck pytest compat

# The site, as tests/test_docs.py builds it: any warning, broken link or
# missing anchor fails. NO_MKDOCS_2_WARNING silences mkdocs-material's banner
# about MkDocs 2 (not a build warning).
docs: $(STAMP)
	$(BIN)/python -m hookkit._face.reference_docs --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-reference: $(STAMP)
	$(BIN)/python -m hookkit._face.reference_docs

# Not part of the test suite: hookkit's cost per request against bare gunicorn
# and a hand-rolled peer (benchmarks/bench.py says how; BENCH_* variables).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) .venv-gunicorn-* .pytest_cache .mypy_cache .ruff_cache site
