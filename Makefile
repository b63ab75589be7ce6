# blobwatch: set-up, tests and the demo.  `make demo` and `make test` do all the set-up.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo-output

.PHONY: setup lint test test-slow demo bench clean

setup: $(STAMP)

# torch is pinned first to the CPU build that lies on this machine's disk; an unpinned torch
# would pull a multi-GB CUDA build.  The package itself only asks for torch>=2.4.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test,distributed,research]"
	touch $(STAMP)

# Static checks (configured in pyproject.toml): ruff's lint rules, then mypy on src/blobwatch
# (incremental: a few seconds once its cache exists).  `ruff format --check` joins here once the
# code base has been formatted in one commit.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(VENV)/bin/blobwatch demo $(DEMO)

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
