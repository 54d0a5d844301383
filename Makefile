# FlawForge: `make demo` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test setup bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (FlawForge needs Python 3.11+)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m factory.models.tiny.vae  # fit the tiny VAE once per machine (cached in ~/.cache/flawforge)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m factory.run --n 8 --preset tiny --source samples --out $(DEMO_OUT)
	$(PY) -m factory.preview $(DEMO_OUT)
	@echo "demo done: shards in $(DEMO_OUT)/data, preview in $(DEMO_OUT)/preview/index.html"

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/processor_overhead.py
	$(PY) bench/value_cache.py
	$(PY) bench/factory_throughput.py

clean:
	rm -rf runs .pytest_cache
