#!/usr/bin/env bash
# The pytest part of `make test`: two processes side by side, so that both CPU cores work.
#   * the committed notebooks under nbval, in one process and in order (they share runs/: the
#     first one pretrains the base model the others load); its output goes to runs/nbval.log
#     and is printed when it ends;
#   * the tests, spread over TEST_JOBS pytest-xdist workers (default 2), a test file per unit,
#     the README's end-to-end commands first (conftest.py orders them).
# Exits non-zero when either fails. (xdist's `loadgroup`, which could put the notebooks on one
# worker of a single session, does nothing under pytest 9.2: its group mark is lost.)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
JOBS="${TEST_JOBS:-2}"
mkdir -p runs
log=runs/nbval.log
"$PY" -m pytest -p no:cacheprovider --nbval --nbval-current-env \
  --nbval-sanitize-with tests/nbval_sanitize.cfg --durations=10 notebooks >"$log" 2>&1 &
notebooks=$!
trap 'kill "$notebooks" 2>/dev/null' INT TERM
"$PY" -m pytest -n "$JOBS" --dist loadfile --no-loadscope-reorder -p no:cacheprovider \
  --durations=15 tests
tests_rc=$?
wait "$notebooks"
notebooks_rc=$?
echo "==> nbval over notebooks/ (from $log):"
cat "$log"
echo "==> tests: exit $tests_rc; notebooks: exit $notebooks_rc"
[ "$tests_rc" -eq 0 ] && [ "$notebooks_rc" -eq 0 ]
