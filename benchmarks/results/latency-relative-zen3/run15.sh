#!/bin/bash
source /work/main/.venv/bin/activate
cd /work/runs/lt3
echo "start $(date -u +%T)"
mnv3 latency-table build --space mobilenet_v3_small --resolution 64 --runtime onnxruntime --threads 1 --relative --min-seconds 0.15 --out rel15.json --quiet
echo "built $(date -u +%T)"
mnv3 latency-table fit rel15.json --samples 60 --quiet --json > fit15.json
echo "fitted $(date -u +%T)"
mnv3 latency-table check rel15.json --samples 100 --rounds 8 --quiet --json --verbose > check15.json
echo "checked $(date -u +%T)"
