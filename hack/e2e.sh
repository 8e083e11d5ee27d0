#!/usr/bin/env bash
# The end-to-end suite (tests/e2e/conftest.py says which tests are serial and
# why), each part's wall time printed at the end:
#   - the parallel phase: pytest-xdist workers on the repo's cluster (.cluster);
#   - beside it, the serial phase, one test at a time, on a second cluster of
#     its own (.cluster-serial, ports shifted by 2000): its faults (restarting
#     the control plane, losing a node, stopping S3, old CRDs) reach no test of
#     the parallel phase; it ends with the secret-leak scan of that cluster;
#   - then the secret-leak scan of the repo's cluster, over the whole run.
# E2E_WORKERS: the parallel phase's workers. Extra arguments go to every
# pytest (e.g. -x, -k).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${E2E_WORKERS:-3}
SERIAL_STATE=${E2E_SERIAL_STATE:-$PWD/.cluster-serial}
SERIAL_OFFSET=${E2E_SERIAL_PORT_OFFSET:-2000}
LOGS=.cluster/logs
started=$SECONDS

serial_env() {
    KUBETUNE_STATE_DIR="$SERIAL_STATE" KUBETUNE_PORT_OFFSET="$SERIAL_OFFSET" \
        KUBECONFIG="$SERIAL_STATE/kubeconfig" "$@"
}
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

if ! serial_env "$PY" -m localcluster up; then
    echo "error: the serial phase's cluster ($SERIAL_STATE) did not start" >&2
    exit 1
fi
mkdir -p "$LOGS"
serial_log="$LOGS/e2e-serial-phase.log"
(
    t0=$SECONDS
    serial_env "$PY" -m pytest -q --durations=20 -m serial tests/e2e "$@"
    rc=$?
    echo "serial phase: $(fmt $((SECONDS - t0))) (rc $rc)"
    exit "$rc"
) > "$serial_log" 2>&1 &
serial_pid=$!

t0=$SECONDS
"$PY" -m pytest -q --durations=20 -n "$WORKERS" --dist loadgroup -m "not serial" tests/e2e "$@"
parallel_rc=$?
parallel_s=$((SECONDS - t0))

wait "$serial_pid"
serial_rc=$?
echo "---- the serial phase, on its own cluster ($serial_log):"
cat "$serial_log"
serial_env "$PY" -m localcluster down > /dev/null

t0=$SECONDS
"$PY" -m pytest -q tests/e2e/test_zz_secret_leaks.py "$@"
scan_rc=$?
printf 'e2e: %s; parallel phase (%s workers) %s (rc %d); serial phase beside it (rc %d, time above); leak scan %s (rc %d)\n' \
    "$(fmt $((SECONDS - started)))" "$WORKERS" "$(fmt "$parallel_s")" "$parallel_rc" "$serial_rc" \
    "$(fmt $((SECONDS - t0)))" "$scan_rc"
[ "$parallel_rc" -eq 0 ] && [ "$serial_rc" -eq 0 ] && [ "$scan_rc" -eq 0 ]
