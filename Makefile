# Two commands on a fresh machine with Python 3.10+ and make:
#   make demo   the reference server tour
#   make test   ruff, mypy --strict on hookkit/, the whole pytest suite on
#               gunicorn 27, and the version-sensitive tests on 26 and 25
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest compat install clean bench

# Older gunicorn releases the version-sensitive tests also run against.
COMPAT_GUNICORN := 26.2.0 25.3.0
COMPAT_TESTS := tests/test_exit_reasons.py tests/test_worker_classes.py tests/test_dropin.py \
	tests/test_demo.py tests/test_hooks_table.py tests/test_chain.py tests/test_logging.py \
	tests/test_exits.py tests/test_smoke_integration.py tests/test_metrics_integration.py \
	tests/test_tracing_integration.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
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
	$(BIN)/pytest

# One venv per gunicorn release, beside the main one.
.venv-gunicorn-%/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-gunicorn-$*
	.venv-gunicorn-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-gunicorn-$*/bin/python -m pip install --quiet -e '.[test]' 'gunicorn==$*'
	touch $@

compat: $(foreach v,$(COMPAT_GUNICORN),.venv-gunicorn-$(v)/.installed)
	for v in $(COMPAT_GUNICORN); do \
		echo "== gunicorn $$v"; \
		.venv-gunicorn-$$v/bin/pytest -q -p no:cacheprovider $(COMPAT_TESTS) -k "not recycling" || exit 1; \
	done

test: lint typecheck pytest compat

# Not part of the test suite: hookkit's cost per request against bare gunicorn
# and a hand-rolled peer (benchmarks/bench.py says how; BENCH_* variables).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) .venv-gunicorn-* .pytest_cache .mypy_cache .ruff_cache
