#!/usr/bin/env bash
# `make test`, what CI runs: lint, unit tests, the local cluster, the
# end-to-end suite (hack/e2e.sh: a parallel phase, then a serial one), the
# image and its tests. The builds the later phases need (control plane,
# Kueue, kwok, the image; each cached after its first time) start at once in
# the background, beside lint and the unit tests. Each phase's wall time is
# printed at the end, passed or not.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
started=$SECONDS
declare -a report=()

phase() {  # NAME COMMAND...: runs it, notes its time; a failure ends the run
    local name=$1 t0=$SECONDS rc
    shift
    echo "== $name"
    "$@"
    rc=$?
    report+=("$(printf '%-28s %3dm%02ds%s' "$name" $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) \
        "$([ "$rc" -eq 0 ] || echo "  FAILED (rc $rc)")")")
    if [ "$rc" -ne 0 ]; then exit "$rc"; fi
}

summary() {
    echo "== make test: wall time by phase"
    printf '%s\n' "${report[@]}"
    printf '%-28s %3dm%02ds\n' "total" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60))
}
trap summary EXIT

builds() {
    bash localcluster/build.sh all && bash localcluster/build.sh kueue &&
        bash localcluster/build.sh kwok && bash hack/image.sh build
}

phase "venv" make --no-print-directory venv
builds_log=$(mktemp -t kubetune-builds.XXXXXX.log)
builds > "$builds_log" 2>&1 &
builds_pid=$!
phase "lint" make --no-print-directory lint
phase "unit tests" "$VENV/bin/pytest" -q -n 2 tests/unit
wait_builds() {
    wait "$builds_pid" && return 0
    tail -40 "$builds_log"
    echo "the builds failed: $builds_log"
    return 1
}
phase "builds, after lint and unit" wait_builds
phase "cluster up" "$VENV/bin/python" -m localcluster up
phase "e2e" bash hack/e2e.sh
phase "image tests" "$VENV/bin/pytest" -q tests/image
