# make serve  - create .venv, install the server (requirements-serve.lock), start it on the default model
# make test   - create .venv, install the server and the test tools (requirements.lock),
#               type-check (mypy strict), run the whole test suite
# make bench  - run the load benchmark against a fresh server and print ratios, then bench-priority
# make bench-priority - issue 13's query under bulk load (and a query flood), --queue-policy fifo vs
#               priority alternating, ~6 min (PRIORITY_ARGS="--runs 3 --query-header high ...")
# make bench-cpu - server CPU ms per request by role on a near-free model (BENCH_ARGS="--runs 3 ...")
# make proto  - regenerate the protobuf/gRPC modules into proto/gen_pb/

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
PRIORITY_ARGS ?=

export HF_HUB_OFFLINE ?= 1

.PHONY: install install-serve proto serve test typecheck bench bench-priority bench-cpu clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The serve lock is complete, so it installs without resolving dependencies.
# The generated protos come before the project: embedserve.proto.gen_pb is one of its packages.
$(SERVE_STAMP): pyproject.toml requirements-serve.lock | $(PY)
	$(PY) -m pip install --quiet --no-deps -r requirements-serve.lock
	$(PY) proto/generate.py
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(SERVE_STAMP) requirements.lock requirements-reference.lock
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -r requirements-reference.lock
	touch $(DEV_STAMP)

proto/gen_pb/__init__.py: $(SERVE_STAMP) $(wildcard proto/*.proto) proto/generate.py
	$(PY) proto/generate.py

proto: $(SERVE_STAMP)
	$(PY) proto/generate.py

install-serve: $(SERVE_STAMP) proto/gen_pb/__init__.py

install: $(DEV_STAMP) proto/gen_pb/__init__.py

serve: install-serve
	$(VENV)/bin/embedserve $(ARGS)

# mypy cannot follow the editable install's import hook, so it reads the sources
# through a tree of links shaped like the installed `embedserve` package.
typecheck: install
	rm -rf .typecheck && mkdir -p .typecheck/embedserve
	for part in launcher.py router backends tokenizer_pool proto; do ln -s ../../$$part .typecheck/embedserve/$$part; done
	MYPYPATH=.typecheck $(VENV)/bin/mypy -p embedserve

test: install typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench query-under-bulk $(PRIORITY_ARGS)

bench-priority: install
	$(PY) -m bench query-under-bulk $(PRIORITY_ARGS)

bench-cpu: install
	$(PY) -m bench cpu-per-request $(BENCH_ARGS)

clean:
	rm -rf $(VENV) proto/gen_pb .typecheck
