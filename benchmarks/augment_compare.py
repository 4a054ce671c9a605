"""Joint augmentation: our torch transforms against albumentations on the same pipeline (issues 17 and 18).

    pip install albumentations          # not a dependency of the library; this benchmark only
    python benchmarks/augment_compare.py [--scenes 64] [--rounds 7] [--json out.json]

The issues asked for joint image/mask and image/box augmentation "through a well-kept library where one serves
(measure it against torch-only code on the same pipeline; keep the faster)". Both sides get the same inputs, the
composed Fashion-MNIST scenes as the training loop holds them (``C x H x W`` float tensors in [0, 1], masks
``H x W`` int64, boxes xyxy pixels), and must hand back what the loop needs (normalised ``C x H x W`` float32
tensors, int64 masks, box and label tensors), so albumentations pays for the HWC numpy round trip the pipeline
would cost it. Its pipeline mirrors ours: random scale (bilinear image, nearest mask), pad bottom/right to the crop
(mean / 255), random crop, horizontal flip, normalise; for boxes, boxes keeping under 30% of their area dropped.

Cases: segmentation at the scenes recipe (256x512 scenes, 256x256 crops, scale 0.75-1.5), the same at the 30-minute
recipe's 128x256 scenes / 128 crops, a Cityscapes-sized frame (1024x2048 random image, 768 crops, scale 0.5-2.0,
the cityscapes recipe), and detection on 256x256 scenes (scale 0.75-1.25). One thread (torch and OpenCV), the two
sides interleaved round by round; printed: median microseconds per item and albumentations / torch.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from mobilenetv3.data.det_transforms import DetTrainTransform
from mobilenetv3.data.scenes import FashionScenes, scene_source
from mobilenetv3.data.seg_transforms import SegTrainTransform

MEAN, STD = (0.405,) * 3, (0.175,) * 3


def albu_seg(crop: tuple[int, int], scale: tuple[float, float], hflip: float) -> Any:
    import albumentations as A
    import cv2

    return A.Compose([
        A.RandomScale(scale_limit=(scale[0] - 1, scale[1] - 1), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST_EXACT, p=1.0),
        A.PadIfNeeded(min_height=crop[0], min_width=crop[1], position="top_left", border_mode=cv2.BORDER_CONSTANT,
                      fill=MEAN, fill_mask=255),
        A.RandomCrop(*crop),
        A.HorizontalFlip(p=hflip),
        A.Normalize(mean=MEAN, std=STD, max_pixel_value=1.0),
    ])


def albu_det(crop: tuple[int, int], scale: tuple[float, float], hflip: float) -> Any:
    import albumentations as A
    import cv2

    return A.Compose([
        A.RandomScale(scale_limit=(scale[0] - 1, scale[1] - 1), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.PadIfNeeded(min_height=crop[0], min_width=crop[1], position="top_left", border_mode=cv2.BORDER_CONSTANT,
                      fill=MEAN),
        A.RandomCrop(*crop),
        A.HorizontalFlip(p=hflip),
        A.Normalize(mean=MEAN, std=STD, max_pixel_value=1.0),
    ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3))


def seg_items(kind: str, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if kind == "cityscapes":
        g = torch.Generator().manual_seed(0)
        return [(torch.rand(3, 1024, 2048, generator=g), torch.randint(0, 19, (1024, 2048), generator=g))
                for _ in range(max(2, n // 8))]
    config, _ = scene_source(kind)
    data = FashionScenes("train", transform=SegTrainTransform(mean=MEAN, std=STD), config=config, length=n)
    return [(img.expand(3, -1, -1).contiguous(), mask.to(torch.int64)) for img, mask, _ in map(data.scene, range(n))]


def run_torch_seg(transform: SegTrainTransform, items: list, g: torch.Generator) -> None:
    for img, mask in items:
        transform(img, mask, generator=g)


def run_albu_seg(pipeline: Any, items: list) -> None:
    for img, mask in items:
        out = pipeline(image=img.permute(1, 2, 0).numpy(), mask=mask.numpy().astype(np.uint8))
        torch.from_numpy(out["image"].transpose(2, 0, 1).copy()), torch.from_numpy(out["mask"].astype(np.int64))


def run_torch_det(transform: DetTrainTransform, items: list, g: torch.Generator) -> None:
    for img, target in items:
        transform(img, target, generator=g)


def run_albu_det(pipeline: Any, items: list) -> None:
    for img, target in items:
        out = pipeline(image=img.permute(1, 2, 0).numpy(), bboxes=target["boxes"].numpy(),
                       labels=target["labels"].numpy())
        torch.from_numpy(out["image"].transpose(2, 0, 1).copy())
        torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        torch.as_tensor(np.asarray(out["labels"], dtype=np.int64))


def time_pair(a: Any, b: Any, count: int, rounds: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(rounds):
        for fn, store in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            store.append((time.perf_counter() - t0) / count * 1e6)
    return statistics.median(ta), statistics.median(tb)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=64, help="items per round (default 64; Cityscapes frames: 1/8)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    import albumentations
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cases = [
        ("segmentation, 256x512 scenes, 256 crops", "size=256x512", (256, 256), (0.75, 1.5)),
        ("segmentation, 128x256 scenes, 128 crops", "size=128x256", (128, 128), (0.75, 1.5)),
        ("segmentation, 1024x2048 frame, 768 crops", "cityscapes", (768, 768), (0.5, 2.0)),
    ]
    rows = []
    for name, kind, crop, scale in cases:
        items = seg_items(kind, args.scenes)
        ours = SegTrainTransform(mean=MEAN, std=STD, channels=3, crop=crop, scale=scale, hflip=0.5)
        theirs = albu_seg(crop, scale, 0.5)
        g = torch.Generator().manual_seed(0)
        t_ours, t_albu = time_pair(partial(run_torch_seg, ours, items, g), partial(run_albu_seg, theirs, items),
                                   len(items), args.rounds)
        rows.append({"case": name, "torch_us": round(t_ours), "albumentations_us": round(t_albu),
                     "ratio": round(t_albu / t_ours, 3)})
    config, _ = scene_source("size=256x256")
    data = FashionScenes("train", transform=SegTrainTransform(mean=MEAN, std=STD), config=config,
                         length=args.scenes)
    det_items = [data.objects(i) for i in range(args.scenes)]
    det_items = [(img.expand(3, -1, -1).contiguous(), t) for img, t in det_items]
    ours_det = DetTrainTransform(mean=MEAN, std=STD, channels=3, crop=(256, 256), scale=(0.75, 1.25), hflip=0.5)
    g = torch.Generator().manual_seed(0)
    t_ours, t_albu = time_pair(lambda: run_torch_det(ours_det, det_items, g),
                               lambda: run_albu_det(albu_det((256, 256), (0.75, 1.25), 0.5), det_items),
                               len(det_items), args.rounds)
    rows.append({"case": "detection, 256x256 scenes, 256 crops", "torch_us": round(t_ours),
                 "albumentations_us": round(t_albu), "ratio": round(t_albu / t_ours, 3)})
    print(f"torch {torch.__version__}, albumentations {albumentations.__version__}, OpenCV {cv2.__version__}, "
          f"{platform.processor() or platform.machine()}, 1 thread, median of {args.rounds} interleaved rounds")
    print(f"{'case':<44}{'torch us':>10}{'albu us':>10}{'albu/torch':>12}")
    for r in rows:
        print(f"{r['case']:<44}{r['torch_us']:>10}{r['albumentations_us']:>10}{r['ratio']:>12.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "albumentations": albumentations.__version__,
                       "opencv": cv2.__version__, "rounds": args.rounds, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
