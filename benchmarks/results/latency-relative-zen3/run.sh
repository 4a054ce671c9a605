#!/bin/bash
source /work/main/.venv/bin/activate
cd /work/runs/lt4
for cfg in "onnxruntime 224" "openvino 64"; do
  set -- $cfg
  echo "$1 $2 start $(date -u +%T)"
  python /work/main/benchmarks/latency_model.py --relative --sessions 3 --min-seconds 0.03 --warmup 2 --min-runs 5 --rounds 8 --samples 100 \
    --runtimes $1 --resolutions $2 --tables tables --json $1-$2.json --quiet > $1-$2.txt 2> $1-$2.err
  echo "$1 $2 done $(date -u +%T)"
done
