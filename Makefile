# Set-up is two commands: `make run` and `make test`. Both create .venv when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
# pytest-xdist spreads the test modules over the machine's cores (each worker has its own
# databases; a module's tests stay together, in order, with their module fixtures)
PYTEST_ARGS ?= -n auto --dist loadfile --durations=25
EXAMPLES := $(wildcard examples/directory/directory-bundle.json) $(sort $(wildcard examples/referral-bundle-*.json))

.PHONY: install run serve test lint bench mutation clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

## make run: migrate the SQLite database, load examples/, register the demo clients,
## then run the worker (notifications, stalled sweep) and the server
run: install
	$(PY) -m fhir_server init-db
	$(PY) -m fhir_server load $(EXAMPLES)
	$(PY) -m fhir_server import-hsds examples/directory/hsds-sample.json
	$(PY) -m fhir_server demo-clients --base-url http://$(HOST):$(PORT)/fhir
	$(PY) -m fhir_server worker & WORKER=$$!; \
	  trap 'kill $$WORKER 2>/dev/null' EXIT INT TERM; \
	  $(PY) -m fhir_server serve --host $(HOST) --port $(PORT)

## make test: lint, then the whole suite on SQLite and on a throwaway PostgreSQL
test: install
	$(PY) -m ruff check .
	tools/test-postgres.sh $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

## make bench: the benchmarks in bench/ (figures go to the README by hand)
bench: install
	tools/test-postgres.sh $(PY) -m bench.run_all

## make mutation: mutation testing of the rule modules (tools/mutation.py; not in CI, slow)
## MUTATION_ARGS="parser --sample 50" picks targets and the sample size
mutation: install
	$(PY) -m pip install -q -e '.[test,mutation]'
	nice $(PY) tools/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf var .pytest_cache
