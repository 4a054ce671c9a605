#!/bin/bash
source /work/main/.venv/bin/activate
cd /work/runs/lt2
for clock in cpu wall; do
  echo "$clock start $(date -u +%T)"
  mnv3 latency-table build --space mobilenet_v3_small --resolution 64 --runtime onnxruntime --threads 1 --clock $clock --out $clock.json --quiet
  echo "$clock built $(date -u +%T)"
  mnv3 latency-table fit $clock.json --samples 30 --quiet --json > fit-$clock.json
  echo "$clock fitted $(date -u +%T)"
  mnv3 latency-table check $clock.json --samples 40 --quiet --json --verbose > check-$clock.json
  echo "$clock checked $(date -u +%T)"
done
