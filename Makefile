# The README's two commands: `make demo` and `make test`.  Both install what
# they need first (apt packages when missing, .venv, `pip install -e .[dev]`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
SOURCES := pyproject.toml setup.py $(wildcard native/*.c native/*.h native/*.py)
TEST_TOOLS := curl:curl wrk:wrk redis-benchmark:redis-tools redis-server:redis-server haproxy:haproxy \
	openssl:openssl

.PHONY: demo test lint bench docs soak clean install wheel test-matrix

install: $(STAMP)

$(STAMP): $(SOURCES) scripts/bootstrap.sh
	PY=$(PY) VENV=$(VENV) ./scripts/bootstrap.sh
	touch $(STAMP)

# Real peers the tests drive (curl, wrk, redis-benchmark, redis-server, haproxy, openssl).
$(VENV)/.stamp-testtools: $(STAMP)
	PY=$(PY) VENV=$(VENV) APT_ONLY=1 EXTRA_APT="$(TEST_TOOLS)" ./scripts/bootstrap.sh
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/http.py --host 127.0.0.1 --port 8080

# The suite runs twice: against the C extension (zerg._speedups) and against
# the pure-Python reference it mirrors (ZERG_NO_EXTENSIONS=1).
test: $(STAMP) $(VENV)/.stamp-testtools
	@echo "== make test: with the C extension"
	@$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc
	@echo "== make test: the pure-Python reference (ZERG_NO_EXTENSIONS=1)"
	@ZERG_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc
	$(MAKE) --no-print-directory lint
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check zerg examples benchmarks tests
	$(BIN)/mypy --strict

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/allocations.py

# The sdist and one repaired (manylinux) wheel per CPython found (3.11-3.13, pyenv or PATH)
# in dist/; each wheel's native modules are checked not to link liburing dynamically.
wheel: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[release]' --config-settings editable_mode=compat
	$(BIN)/python scripts/wheels.py

# The suite against each installed wheel of dist/, per interpreter, both implementations.
test-matrix: wheel
	$(BIN)/nox -f noxfile.py

docs: $(STAMP)
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

soak: $(STAMP)
	$(BIN)/python scripts/soak.py --duration $${SOAK_SECONDS:-600}

clean:
	rm -rf build dist *.egg-info zerg/_uring*.so zerg/_speedups*.so docs/_build
