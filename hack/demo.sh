#!/usr/bin/env bash
# The main job: start the local cluster (building it the first time), install
# kubetune, run examples/quickstart-job.yaml, suspend it mid-run, resume it,
# and show that it finishes without losing progress. The operator it starts is
# stopped when it ends, however it ends; the cluster stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# A cluster moved by KUBETUNE_PORT_OFFSET (beside another one) moves the
# operator's ports and the example's S3 endpoint with it.
port_offset=${KUBETUNE_PORT_OFFSET:-0}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "local cluster"
$PY -m localcluster up
# shellcheck disable=SC1091
source .cluster/env

say "CRD"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established crd/trainablejobs.kubetune.io --timeout=60s

# `make cluster-down` stops only the cluster's own processes, so an operator
# left behind would outlive it, retrying a dead API server. The demo stops the
# operator it started on every exit (Ctrl-C and errors included).
started_operator=""
stop_operator() {
  [[ -n "$started_operator" ]] || return 0
  kill -TERM -- "-$started_operator" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$started_operator" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$started_operator" 2>/dev/null || true
  rm -f .cluster/operator.pid
  started_operator=""
}
trap stop_operator EXIT
trap 'exit 130' INT TERM  # so the EXIT trap runs on a signal too

say "operator"
if [[ -f .cluster/operator.pid ]] && kill -0 "$(cat .cluster/operator.pid)" 2>/dev/null; then
  echo "kubetune-operator already running (pid $(cat .cluster/operator.pid)); it is left running"
else
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_ENDPOINT_URL \
    setsid .venv/bin/kubetune-operator \
    --progress-listen "0.0.0.0:$((8470 + port_offset))" \
    --metrics-listen "0.0.0.0:$((8471 + port_offset))" \
    >> .cluster/logs/operator.log 2>&1 < /dev/null &
  started_operator=$!
  echo "$started_operator" > .cluster/operator.pid
  echo "kubetune-operator started (pid $started_operator, log .cluster/logs/operator.log)"
fi

say "S3 bucket and credentials"
$PY - <<'PYEOF'
import boto3
s3 = boto3.client("s3")
try:
    s3.create_bucket(Bucket="kubetune")
    print("bucket kubetune created")
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    print("bucket kubetune exists")
PYEOF
kubectl create secret generic s3-credentials \
  --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "secret s3-credentials applied"

say "run examples/quickstart-job.yaml"
kubectl delete tj quickstart --ignore-not-found --wait=true >/dev/null
$PY - <<'PYEOF'
import boto3
bucket = boto3.resource("s3").Bucket("kubetune")
bucket.objects.filter(Prefix="experiments/default/quickstart/").delete()
PYEOF
sed "s#endpointURL: http://127.0.0.1:9000#endpointURL: $AWS_ENDPOINT_URL#" examples/quickstart-job.yaml |
  kubectl apply -f -
iter() { kubectl get tj quickstart -o jsonpath='{.status.iteration}' 2>/dev/null || true; }
until [[ "$(iter)" -ge 12 ]] 2>/dev/null; do
  kubectl get tj quickstart --no-headers
  if [[ "$(kubectl get tj quickstart -o jsonpath='{.status.phase}')" == Failed ]]; then
    kubectl get tj quickstart -o jsonpath='{.status.conditions[?(@.type=="Failed")].message}{"\n"}'
    echo "the quickstart job failed (operator log: .cluster/logs/operator.log)" >&2
    exit 1
  fi
  sleep 1
done

say "suspend at iteration $(iter)"
kubectl patch tj quickstart --type=merge -p '{"spec":{"suspend":true}}'
kubectl wait --for=jsonpath='{.status.phase}'=Suspended tj/quickstart --timeout=180s
kubectl get tj quickstart
echo "latest checkpoint: $(kubectl get tj quickstart -o jsonpath='{.status.latestCheckpoint.path}')"
echo "worker pods left: $(kubectl get pods -l kubetune.io/job=quickstart --no-headers 2>/dev/null | wc -l)"

say "resume"
kubectl patch tj quickstart --type=merge -p '{"spec":{"suspend":false}}'
kubectl wait --for=condition=Complete tj/quickstart --timeout=300s
kubectl get tj quickstart -o wide
uid=$(kubectl get tj quickstart -o jsonpath='{.metadata.uid}')
kubectl get events --field-selector "involvedObject.uid=$uid" --sort-by=.lastTimestamp \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

say "results in S3"
$PY - <<'PYEOF'
import json, boto3
s3 = boto3.client("s3")
body = s3.get_object(Bucket="kubetune", Key="experiments/default/quickstart/result.json")["Body"].read()
its = [json.loads(l)["training_iteration"] for l in body.decode().splitlines() if l.strip()]
missing = sorted(set(range(1, max(its) + 1)) - set(its))
print(f"{len(its)} results, iterations 1..{max(its)}, missing: {missing or 'none'}")
keys = s3.list_objects_v2(Bucket="kubetune", Prefix="experiments/default/quickstart/", Delimiter="/")
print("run folder:", [p["Prefix"].split("/")[-2] for p in keys.get("CommonPrefixes", [])])
PYEOF
say "done"
if [[ -n "$started_operator" ]]; then
  stop_operator
  echo "kubetune-operator stopped. To run more jobs, start it again in a shell of its own:"
  echo "  KUBECONFIG=.cluster/kubeconfig .venv/bin/kubetune-operator"
else
  echo "the kubetune-operator that was already running still runs:" \
    "stop it with: kill -- -$(cat .cluster/operator.pid 2>/dev/null || echo PID)"
fi
echo "The local cluster is still up (. .cluster/env; kubectl get tj)."
echo "Stop it with 'make cluster-down': the API server, etcd, controller-manager, scheduler," \
  "the node agent with its pods, and the S3 server, then .cluster is removed."
