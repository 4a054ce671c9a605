#!/bin/bash
source /work/main/.venv/bin/activate
cd /work/runs/lt3
echo "start $(date -u +%T)"
mnv3 latency-table build --space mobilenet_v3_small --resolution 64 --runtime onnxruntime --threads 1 --relative --sessions 3 --min-seconds 0.03 --out rels3.json --quiet
echo "built $(date -u +%T)"
mnv3 latency-table fit rels3.json --samples 60 --quiet --json > fits3.json
echo "fitted $(date -u +%T)"
mnv3 latency-table check rels3.json --samples 100 --rounds 8 --quiet --json --verbose > checks3.json
echo "checked $(date -u +%T)"
