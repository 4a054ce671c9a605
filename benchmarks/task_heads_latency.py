"""Latency of the segmentation and detection networks against the paper's ratios, measured in one run (issues 17,
18): Table 7's rows 4, 6, 7, 8 at 512x1024 and Table 6's SSDLite networks at 320x320 (raw head outputs, no NMS),
ONNX Runtime float, batch 1, 1 thread, interleaved rounds; each network's fastest round (the repeatable figure on
a shared VM), ratios beside the paper's (Pixel 1 ms).

    python benchmarks/task_heads_latency.py [--seg-rounds 20] [--det-rounds 30]

Run it on a quiet machine; the figures it printed are in docs/segmentation.md and docs/detection.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from mobilenetv3.detection import build_detection
from mobilenetv3.detection.paper import TABLE6
from mobilenetv3.latency.targets import prepare_runtime
from mobilenetv3.runtime.cpu import machine_info
from mobilenetv3.runtime.timing import time_interleaved
from mobilenetv3.segmentation import build_segmentation
from mobilenetv3.segmentation.paper import TABLE7


class RawOutputs(nn.Module):
    """A detector's head outputs (no post-processing): what Table 6's latency compares across backbones."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x, raw=True)


def fastest(models: dict[str, nn.Module], shape: tuple[int, ...], rounds: int) -> dict[str, tuple[float, float]]:
    runners = {name: prepare_runtime("onnxruntime", m.eval(), torch.randn(shape), 1).run for name, m in models.items()}
    rounds_ms = time_interleaved(runners, rounds=rounds, warmup=2, min_runs=3, min_seconds=0.0)
    return {k: (min(v), float(np.median(v))) for k, v in rounds_ms.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seg-rounds", type=int, default=20)
    p.add_argument("--det-rounds", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    m = machine_info()
    print(f"{m['cpu']} ({m['cpu_id']}), load {m['load_avg_1m']}, {m['date']}; onnxruntime, 1 thread, batch 1")
    seg = fastest({f"row {r.row}": build_segmentation(r.spec()) for r in TABLE7 if r.row in (4, 6, 7, 8)},
                  (1, 3, 512, 1024), args.seg_rounds)
    for name, (low, mid) in seg.items():
        print(f"  Table 7 {name:<6} 512x1024  fastest {low:7.1f} ms  median {mid:7.1f} ms")
    print(f"LR-ASPP / R-ASPP (rows 7/6): {seg['row 7'][0] / seg['row 6'][0]:.3f}  paper {659 / 668:.3f}")
    print(f"V3 / V2 (rows 8/4):          {seg['row 8'][0] / seg['row 4'][0]:.3f}  paper {657 / 766:.3f}")
    det = fastest({r.backbone: RawOutputs(build_detection(r.spec())) for r in TABLE6}, (1, 3, 320, 320),
                  args.det_rounds)
    for name, (low, mid) in det.items():
        print(f"  SSDLite {name:<10} 320x320  fastest {low:6.2f} ms  median {mid:6.2f} ms")
    paper = {r.backbone: r.latency_ms for r in TABLE6}
    for name in ("V3", "V3^Y", "V3-Small", "V3-Small^Y", "MnasNet"):
        print(f"{name} / V2: {det[name][0] / det['V2'][0]:.3f}  paper {paper[name] / paper['V2']:.3f}")


if __name__ == "__main__":
    main()
