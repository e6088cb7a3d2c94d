#!/usr/bin/env bash
# Two Ray nodes on this machine (127.0.0.1 only), the batch job and the endpoint spread over both, a node killed.
# The same steps, measured and compared with the local engine, are benchmarks/two_node.py (docs/deploy.md).
#
#   scripts/two_node_cluster.sh DUMP.jsonl OUT.parquet
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DUMP=${1:?usage: $0 DUMP.jsonl OUT.parquet}
OUT=${2:?usage: $0 DUMP.jsonl OUT.parquet}
DIR=$(mktemp -d /tmp/rclXXXX)          # short: Ray's socket paths have a length limit

$PY -m serving.cluster up --dir "$DIR" --nodes 2 --cpus-per-node 1     # head node_a + worker node_b
trap '$PY -m serving.cluster down --dir "$DIR"' EXIT                   # ends this cluster's processes only
eval "$($PY -m serving.cluster env --dir "$DIR")"                      # RAY_ADDRESS, HOME, loopback variables
$PY -m serving.cluster status --dir "$DIR"

# The batch job, one scorer actor per node; node_b killed after 60 s (the job retries on node_a and finishes).
.venv/bin/moderation score "$DUMP" --out "$OUT" --engine ray --ray-address "$RAY_ADDRESS" \
    --ray-actors 2 --ray-cpus-per-actor 0.5 --chunk-size 32 --no-progress &
JOB=$!
sleep 60
$PY -m serving.cluster check --dir "$DIR"                              # every socket on loopback?
$PY -m serving.cluster kill-node node_b --dir "$DIR"
wait $JOB || echo "job exit $? (1: some rows carry an error)"
$PY -m serving.cluster status --dir "$DIR"
