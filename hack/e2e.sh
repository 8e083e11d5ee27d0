#!/usr/bin/env bash
# The end-to-end suite in its two phases (tests/e2e/conftest.py says which
# tests are serial and why), each phase's wall time printed at the end.
# E2E_WORKERS: the parallel phase's pytest-xdist workers. Extra arguments go
# to both phases (e.g. -x, -k).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-.venv/bin/pytest}
WORKERS=${E2E_WORKERS:-3}
started=$SECONDS
"$PYTEST" -q --durations=20 -n "$WORKERS" --dist loadgroup -m "not serial" tests/e2e "$@"
parallel_rc=$?
parallel_s=$((SECONDS - started))
"$PYTEST" -q --durations=20 -m serial tests/e2e "$@"
serial_rc=$?
serial_s=$((SECONDS - started - parallel_s))
printf 'e2e parallel phase (%s workers): %dm%02ds (rc %d); serial phase: %dm%02ds (rc %d)\n' \
    "$WORKERS" $((parallel_s / 60)) $((parallel_s % 60)) "$parallel_rc" \
    $((serial_s / 60)) $((serial_s % 60)) "$serial_rc"
[ "$parallel_rc" -eq 0 ] && [ "$serial_rc" -eq 0 ]
