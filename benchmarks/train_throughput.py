"""Training throughput (images per second) of our MobileNetV3 against torchvision's, measured in the same run.

    python benchmarks/train_throughput.py                        # Small and Large, 64x64, batch 128, 2 threads
    python benchmarks/train_throughput.py --models mobilenet_v3_small --rounds 5 --json out.json
    python benchmarks/train_throughput.py --no-compile           # skip the torch.compile variant (slow to build)

One training step is what ``mnv3 train`` does per batch, minus data loading: forward, label-smoothed cross
entropy, backward, an SGD step with momentum 0.9 (the same optimizer for every model, so the models are what is
compared). Inputs are a fixed random batch; the models start from the same kind of random initialisation.

Paths:

* ours, in this process (the core environment's torch): as the training loop runs it (channels-last, the loop's
  default), contiguous NCHW, channels-last + ``torch.compile`` (Inductor; its build time is reported, not timed),
  and the 1-channel stem the Fashion-MNIST main job trains (``--channels 1`` in ``mnv3 train``).
* torchvision's ``mobilenet_v3_small``/``large`` (``weights=None``), in a subprocess with the peer environment's
  python (torchvision needs a newer torch than the core's; ``--peer-python``, else what
  ``mobilenetv3.latency.find_peer_python`` finds, e.g. ``.peer-venv`` from ``make peer-setup``): as shipped (NCHW)
  and in channels-last; and our model again under that torch, so the comparison also holds with the torch version fixed.

The rounds are interleaved (ours, then the peer's, round after round; the two processes never run at the same
time); a path's figure is the median of its rounds. Ratios are against torchvision as shipped, measured in the
same run. Use a quiet machine: other work on the cores lowers every figure, and unevenly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the peer environment runs this file without the package installed

from mobilenetv3 import zoo  # noqa: E402  (pure PyTorch: imports under either torch)
from mobilenetv3.latency import PEER_SETUP_HINT, find_peer_python, machine_info  # noqa: E402
from mobilenetv3.model import MobileNetV3  # noqa: E402

MODELS = ("mobilenet_v3_small", "mobilenet_v3_large")
BASELINE = "torchvision (as shipped, NCHW)"


@dataclasses.dataclass
class Setup:
    model: str
    resolution: int
    batch: int
    threads: int
    min_seconds: float
    num_classes: int = 10


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: nn.Module | None = None):
    """A closure doing one training step; ``compiled`` (if given) is what the forward runs."""
    model.train()
    forward = compiled if compiled is not None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-5)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = criterion(forward(x), y)
        loss.backward()
        opt.step()

    return step


def images_per_second(step, batch: int, min_seconds: float, warmup: int = 3, min_steps: int = 5) -> float:
    for _ in range(warmup):
        step()
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def batch_for(s: Setup, channels: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, channels, s.resolution, s.resolution, generator=g)
    y = torch.randint(0, s.num_classes, (s.batch,), generator=g)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def ours(s: Setup, channels: int = 3, channels_last: bool = True) -> nn.Module:
    torch.manual_seed(0)
    spec = zoo.get_spec(s.model).replace(in_channels=channels, num_classes=s.num_classes, resolution=s.resolution)
    model = MobileNetV3(spec)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def our_steps(s: Setup, compile_: bool, log) -> tuple[dict, dict]:
    """Our paths as ``{label: step}``, and the seconds each compiled path took to build."""
    steps, build = {}, {}
    for label, channels, cl in (("ours (channels-last, as mnv3 train runs it)", 3, True),
                                ("ours (NCHW)", 3, False),
                                ("ours, 1-channel stem (the Fashion-MNIST main job)", 1, True)):
        x, y = batch_for(s, channels, cl)
        steps[label] = (train_step_fn(ours(s, channels, cl), x, y), s.batch)
    if compile_:
        label = "ours (channels-last + torch.compile)"
        model = ours(s)
        x, y = batch_for(s, 3, True)
        step = train_step_fn(model, x, y, compiled=torch.compile(model))
        log(f"  compiling {s.model} ...")
        t0 = time.perf_counter()
        step()  # the first steps build the graphs (forward and backward)
        step()
        build[label] = time.perf_counter() - t0
        steps[label] = (step, s.batch)
    return steps, build


def peer_steps(s: Setup) -> tuple[dict, dict]:
    import torchvision

    steps = {}
    for label, cl in ((BASELINE, False), ("torchvision (channels-last)", True)):
        torch.manual_seed(0)
        model = getattr(torchvision.models, s.model)(weights=None, num_classes=s.num_classes)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        x, y = batch_for(s, 3, cl)
        steps[label] = (train_step_fn(model, x, y), s.batch)
    x, y = batch_for(s, 3, True)
    steps["ours under the peer's torch (channels-last)"] = (train_step_fn(ours(s), x, y), s.batch)
    return steps, {"torch": torch.__version__, "torchvision": torchvision.__version__}


def measure(steps: dict, s: Setup) -> dict[str, float]:
    return {label: images_per_second(step, batch, s.min_seconds) for label, (step, batch) in steps.items()}


def peer_round(s: Setup) -> None:
    """Run in the peer environment: one round of the peer's paths, as one JSON line on stdout."""
    torch.set_num_threads(s.threads)
    steps, versions = peer_steps(s)
    print(json.dumps({"rates": measure(steps, s), **versions}), flush=True)


def run_peer_round(python: str, s: Setup) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--peer-round", json.dumps(dataclasses.asdict(s))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    if proc.returncode != 0:
        raise RuntimeError(f"the peer round failed ({python}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    python = find_peer_python(args.peer_python)
    if python is None:
        log(f"no peer environment found: timing ours only ({PEER_SETUP_HINT})")
    info = machine_info()
    results = []
    for name in args.models:
        s = Setup(name, args.resolution, args.batch, args.threads, args.min_seconds)
        ours_steps, build = our_steps(s, args.compile, log)
        rates: dict[str, list[float]] = {}
        versions: dict = {}
        for r in range(args.rounds):
            log(f"  {name}: round {r + 1}/{args.rounds} ...")
            for label, rate in measure(ours_steps, s).items():
                rates.setdefault(label, []).append(rate)
            if python is not None:
                reply = run_peer_round(python, s)
                versions = {k: v for k, v in reply.items() if k != "rates"}
                for label, rate in reply["rates"].items():
                    rates.setdefault(label, []).append(rate)
        medians = {label: statistics.median(v) for label, v in rates.items()}
        base = medians.get(BASELINE)
        results.append({
            "model": name, "peer_versions": versions, "compile_build_s": build,
            "rows": [{"path": label, "images_per_s": med, "rounds": rates[label],
                      "vs_torchvision": med / base if base else None} for label, med in medians.items()],
        })
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return {"machine": info, "torch": torch.__version__, "threads": args.threads, "resolution": args.resolution,
            "batch": args.batch, "rounds": args.rounds, "peer_python": python, "results": results}


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"CPU: {m['cpu']}, {res['threads']} threads, batch {res['batch']}, {res['resolution']}x{res['resolution']},"
          f" {res['rounds']} interleaved rounds, {m['date']}; load average (1 min) {m['load_avg_1m']} at start, "
          f"{m['load_avg_1m_end']} at the end")
    for r in res["results"]:
        v = r["peer_versions"]
        print(f"\n{r['model']}: ours under torch {res['torch']}"
              + (f"; torchvision {v['torchvision']} under torch {v['torch']}" if v else "; no peers"))
        header = f"{'path':<52} {'img/s':>8} {'rounds':>13} {'vs torchvision':>15}"
        print(header)
        print("-" * len(header))
        for row in r["rows"]:
            lo, hi = min(row["rounds"]), max(row["rounds"])
            vs = f"{row['vs_torchvision']:.2f}x" if row["vs_torchvision"] else "-"
            print(f"{row['path']:<52} {row['images_per_s']:>8.0f} {f'{lo:.0f}-{hi:.0f}':>13} {vs:>15}")
        for label, secs in r["compile_build_s"].items():
            print(f"({label}: {secs:.0f} s to build its graphs before the first timed step)")
    print(f"\nvs torchvision: images per second over those of {BASELINE}, measured in the same run.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=8.0, help="per path per round (default 8)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time channels-last + torch.compile (default on)")
    parser.add_argument("--peer-python", help="python of the peer environment (torchvision)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--peer-round", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_round:
        peer_round(Setup(**json.loads(args.peer_round)))
        return
    res = run(args)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
