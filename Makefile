# make serve  - create .venv, install, start the server on the default model
# make test   - create .venv, install, type-check (mypy strict), run the whole test suite
# make bench  - run the load benchmark against a fresh server and print ratios
# make proto  - regenerate the protobuf/gRPC modules into proto/gen_pb/

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

export HF_HUB_OFFLINE ?= 1

.PHONY: install proto serve test typecheck bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

proto/gen_pb/__init__.py: $(STAMP) $(wildcard proto/*.proto) proto/generate.py
	$(PY) proto/generate.py

proto: $(STAMP)
	$(PY) proto/generate.py

install: $(STAMP) proto/gen_pb/__init__.py

serve: install
	$(VENV)/bin/embedserve $(ARGS)

typecheck: install
	$(VENV)/bin/mypy launcher.py router backends tokenizer_pool proto

test: install typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) proto/gen_pb
