"""How much mIoU the composed scenes allow a network whose logits live at a coarse stride (issue 17).

    python benchmarks/seg_ceiling.py [--sizes 128x256 256x512] [--strides 4 8 16 32] [--scenes 300] [--json F]

LR-ASPP sums its two class maps at output stride 8 (the stride-16 branch upsampled, plus a 1x1 conv of the
stride-8 tap) and resizes that sum bilinearly to the input; R-ASPP's logits live at stride 16. A garment's mask
has the detail of its Fashion-MNIST image (pixels under the intensity threshold inside a garment are background),
so a map that coarse cannot draw it exactly however well it recognises the garment. This prints what a perfect
recogniser at each stride scores: its logits in each ``s x s`` cell are the cell's true class shares (the area
average of the one-hot mask), resized bilinearly to the scene and arg-maxed, scored by the same confusion matrix as
`mnv3 eval` over the test split's first ``--scenes`` scenes. It is an estimate of the ceiling, not a proof (a
cleverer coarse map could place edges a little better), and it is the scale the trained figures of
docs/segmentation.md are read against: the same scenes at twice the canvas move every garment's edge pixels
into finer cells.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from mobilenetv3.data.scenes import SCENE_CLASSES, FashionScenes, scene_source
from mobilenetv3.tasks.seg_metrics import ConfusionMatrix


class Raw:
    """The identity transform: the scene's image and uint8 mask as composed."""

    channels, mean, std = 3, (0.0,) * 3, (1.0,) * 3

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image, mask


def coarse_prediction(mask: torch.Tensor, stride: int, num_classes: int) -> torch.Tensor:
    """The arg-max of the class shares of each ``stride x stride`` cell, resized bilinearly to the mask."""
    if stride == 1:
        return mask
    shares = F.one_hot(mask, num_classes).permute(2, 0, 1)[None].float()
    cells = F.avg_pool2d(shares, stride, ceil_mode=True)
    return F.interpolate(cells, size=tuple(mask.shape), mode="bilinear", align_corners=False)[0].argmax(0)


def ceiling(size: str, strides: list[int], scenes: int) -> dict[int, ConfusionMatrix]:
    config, _ = scene_source(f"size={size}")
    data = FashionScenes("test", transform=Raw(), config=config, length=scenes)
    n = len(SCENE_CLASSES)
    out = {s: ConfusionMatrix(n) for s in strides}
    for k in range(len(data)):
        mask = data[k][1].long()
        for s in strides:
            out[s].update(coarse_prediction(mask, s, n), mask)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["128x256", "256x512"], help="scene canvases, HxW")
    p.add_argument("--strides", nargs="+", type=int, default=[4, 8, 16, 32])
    p.add_argument("--scenes", type=int, default=300, help="test scenes scored (from the first)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"mIoU of a perfect recogniser whose logits live at stride s ({args.scenes} test scenes)")
    print(f"{'canvas':>9} {'stride':>6} {'mIoU':>7} {'worst class':>22} {'background':>10}")
    for size in args.sizes:
        for s, matrix in ceiling(size, args.strides, args.scenes).items():
            ious = matrix.iou()
            worst = min(range(1, len(ious)), key=lambda c: ious[c])
            rows.append({"canvas": size, "stride": s, "miou": matrix.miou(),
                         "iou": dict(zip(SCENE_CLASSES, ious, strict=True))})
            print(f"{size:>9} {s:>6} {matrix.miou():6.2f}% {SCENE_CLASSES[worst]:>14} {ious[worst]:6.2f}% "
                  f"{ious[0]:9.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scenes": args.scenes, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
