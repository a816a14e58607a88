# The two README commands:
#   make run    set up, then run every notebook on the embedded default and write reports/
#   make test   set up (with test tools and chromium), then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-dev run test lint refresh-notebooks sweep bench clean

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev --browser

run: setup
	$(VENV)/bin/tpccma report

# ruff, then the tests (spread over TEST_JOBS pytest-xdist workers) beside the committed notebooks
# re-executed under nbval, every printed output compared after the sanitisers (see README,
# "Tests"): scripts/run_tests.sh. conftest.py starts each notebook kernel with the environment
# the stored outputs were made with (tpccma_lib.app.notebooks.STORED_OUTPUT_ENV).
TEST_JOBS ?= 2
test: setup-dev
	$(PY) -m ruff check tpccma_lib tests benchmarks
	TEST_JOBS=$(TEST_JOBS) PY=$(PY) bash scripts/run_tests.sh

lint:
	$(PY) -m ruff check tpccma_lib tests benchmarks
	$(PY) -m ruff format --check tpccma_lib tests benchmarks

# Re-execute the notebooks on the embedded default and store their outputs (on purpose only).
refresh-notebooks: setup
	$(VENV)/bin/tpccma refresh-notebooks

sweep: setup
	$(VENV)/bin/tpccma sweep

bench: setup
	for f in benchmarks/bench_*.py; do $(PY) $$f; done

clean:
	rm -rf runs reports/*.html reports/*.png data/cache
