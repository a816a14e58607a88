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

# Unit/property/DDP/CLI/browser tests, then the committed notebooks re-executed under nbval,
# every printed output compared after the sanitisers (see README, "Tests"). One torch thread per
# kernel, as when the stored outputs were made (make refresh-notebooks).
NBVAL := --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
# = tpccma_lib.app.notebooks.STORED_OUTPUT_ENV (a test keeps them equal): one torch thread and
# the AVX2 code paths, the arithmetic the stored outputs were made with on any x86 machine.
NBVAL_ENV := TPCCMA_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell
test: setup-dev
	$(PY) -m ruff check tpccma_lib tests benchmarks
	$(PY) -m pytest tests -p no:cacheprovider --durations=15
	$(NBVAL_ENV) $(PY) -m pytest --nbval $(NBVAL) notebooks/

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
