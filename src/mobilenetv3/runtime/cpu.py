"""Facts about the machine a figure comes from (CPU model, load, date), the oneDNN instruction-set cap, thread
pinning and the CPU's single-core peak."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch


# -- machine facts ----------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# Instruction sets that change which kernels a runtime picks (and so its latency), in the order they are listed.
KERNEL_ISA_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_id(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's identity below its model name: vendor, family, model and stepping, and the instruction sets that
    decide a runtime's kernels, e.g. ``"AuthenticAMD 25/1/1 avx2,fma"``. A hypervisor may show every AMD EPYC as
    "AMD EPYC"; this tells a Zen 3 (family 25, model 1) from a Zen 4 (model 17) with AVX-512, whose latencies
    differ. ``"unknown"`` where ``cpuinfo`` cannot be read."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model", "stepping", "flags") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        return "unknown"
    if not fields:
        return "unknown"
    flags = set(fields.get("flags", "").split())
    isas = ",".join(f for f in KERNEL_ISA_FLAGS if f in flags) or "no-avx2"
    return (f"{fields.get('vendor_id', '?')} {fields.get('cpu family', '?')}/{fields.get('model', '?')}/"
            f"{fields.get('stepping', '?')} {isas}")


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The first processor's instruction-set flags from ``cpuinfo`` (empty where it cannot be read)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


def u8s8_saturates(flags: set[str] | None = None) -> bool:
    """Whether ONNX Runtime's uint8 x int8 kernels can saturate on this CPU: an x86 CPU with AVX2 but no VNNI
    (``avx512_vnni``, ``avx_vnni``) or AMX multiplies pairs with ``vpmaddubsw``, whose 16-bit sums saturate
    (ONNX Runtime's quantisation guide; ``reduce_range`` or uint8 weights avoid it). A file quantised for VNNI or
    ARM CPUs is then right, but its outputs measured here can be off."""
    flags = cpu_flags() if flags is None else flags
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def this_cpu() -> dict[str, str]:
    """The header fields that say which CPU a measurement comes from: ``cpu`` (model name) and ``cpu_id``."""
    return {"cpu": cpu_model(), "cpu_id": cpu_id()}


def machine_info() -> dict[str, Any]:
    """CPU model and identity (:func:`cpu_id`), logical CPUs, 1-minute load average (others' work on the
    machine), the date (UTC) and the oneDNN instruction-set cap in force (:func:`onednn_isa_cap`; None: oneDNN
    picks)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {**this_cpu(), "logical_cpus": os.cpu_count(), "load_avg_1m": load,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "onednn_max_cpu_isa": onednn_isa_cap()}


# -- oneDNN's instruction-set cap ---------------------------------------------------------------------------
# OpenVINO's CPU plugin and PyTorch run their convolutions on oneDNN, which picks the newest instruction set the
# CPU has and reads this variable once, when it generates its first kernel in the process.
ONEDNN_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# The values oneDNN 3.x accepts (its "CPU dispatcher control" guide); it ignores any other without a word.
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
               "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "DEFAULT")
# The cap measured faster for batch-1 int8 on a CPU with AMX: OpenVINO's 1x1 int8 convolutions then run on
# AVX-512 VNNI instead of AMX tiles, whose set-up costs more than it saves on these small matrices (module doc).
INT8_ISA_CAP = "AVX512_CORE_VNNI"


def onednn_isa_cap() -> str | None:
    """The oneDNN instruction-set cap this process runs under (``$ONEDNN_MAX_CPU_ISA``), or None."""
    return os.environ.get(ONEDNN_ISA_VARIABLE) or None


def isa_cap_note(cap: str | None) -> str:
    """``", ONEDNN_MAX_CPU_ISA=CAP"`` for a header or set-up line when ``cap`` is set (e.g. ``machine_info()``'s
    ``onednn_max_cpu_isa``), else ``""``: every figure says whether it ran under a cap."""
    return f", {ONEDNN_ISA_VARIABLE}={cap}" if cap else ""


def check_onednn_isa(isa: str) -> str:
    """``isa`` as oneDNN spells it (upper case), or a ValueError listing the accepted names."""
    name = str(isa).strip().upper()
    if name not in ONEDNN_ISAS:
        raise ValueError(f"unknown oneDNN instruction set {isa!r} (choose from {', '.join(ONEDNN_ISAS)})")
    return name


def set_onednn_isa_cap(isa: str) -> str:
    """Cap the instruction set oneDNN (OpenVINO's CPU plugin, PyTorch) may use in this process, e.g.
    :data:`INT8_ISA_CAP`; returns the name set.

    oneDNN reads the cap once, when it generates its first kernel, so this must run before any model runs in
    OpenVINO or PyTorch: it refuses once OpenVINO has been imported, or when ``$ONEDNN_MAX_CPU_ISA`` already holds
    another value (set in the shell, it applies from the start: the safest way). PyTorch cannot be checked: call
    it before the first forward pass. To time a capped path next to uncapped ones in one run, use
    ``compare_with_peers(isa_cap=...)``, which runs the capped paths in a worker process.
    """
    name = check_onednn_isa(isa)
    current = onednn_isa_cap()
    if current is not None and current.upper() != name:
        raise ValueError(f"${ONEDNN_ISA_VARIABLE} is already {current!r} in this process; oneDNN keeps the first "
                         f"value it reads, so {name!r} cannot replace it")
    if current is None and "openvino" in sys.modules:
        raise RuntimeError(f"OpenVINO is already loaded in this process, so oneDNN may have read its instruction "
                           f"set: set ${ONEDNN_ISA_VARIABLE}={name} before importing openvino (or in the shell)")
    os.environ[ONEDNN_ISA_VARIABLE] = name
    return name


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[int]:
    """Set PyTorch's intra-op thread count for the block and restore the previous count afterwards."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)

# -- the CPU's peak -----------------------------------------------------------------------------------------
def cpu_peak(fma_units: int = 2) -> dict[str, Any]:
    """Single-core peak multiply-adds per second from /proc/cpuinfo: clock x SIMD lanes x FMA units.

    fp32: one FMA instruction does ``lanes`` multiply-adds (16 with AVX-512, 8 with AVX2), and a core issues
    ``fma_units`` of them per cycle (2 on Xeon Scalable "Gold/Platinum" and later cores; /proc/cpuinfo cannot
    tell, so it is an argument). int8: one VNNI ``vpdpbusd`` does 4 u8 x s8 products into each 32-bit lane,
    64 per 512-bit instruction (32 for 256-bit AVX-VNNI); without VNNI, ``vpmaddubsw`` + ``vpmaddwd`` give half
    that. The clock is /proc/cpuinfo's "cpu MHz" (under a hypervisor the nominal clock, not the turbo one).
    AMX (``amx_int8``) has a far higher int8 peak (1024 MACs per cycle per core) but ONNX Runtime's int8
    convolutions do not use it.
    """
    flags: set[str] = set()
    mhz, model = None, "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "model name" and model == "unknown":
                model = value.strip()
    except OSError:
        pass
    ghz = (mhz or 0.0) / 1000
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    if "avx512_vnni" in flags:
        int8_per_instr, int8_isa = 64, "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        int8_per_instr, int8_isa = 32, "AVX-VNNI"
    else:
        int8_per_instr, int8_isa = lanes * 2, f"{isa} (vpmaddubsw)"
    return {"cpu": model, "ghz": ghz, "fma_units": fma_units, "isa": isa, "fp32_lanes": lanes,
            "fp32_gmadds": ghz * fma_units * lanes, "int8_isa": int8_isa, "int8_per_instruction": int8_per_instr,
            "int8_gmacs": ghz * fma_units * int8_per_instr, "amx_int8": "amx_int8" in flags,
            "flags": sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))}




def isa_advice(results: Sequence[dict[str, Any]]) -> str:
    """A note for latency results (``LatencyResult.to_dict()`` rows) that timed OpenVINO int8 uncapped on a CPU
    with AMX, pointing at the cap that measured faster there (:data:`INT8_ISA_CAP`); ``""`` otherwise."""
    if onednn_isa_cap() is None and any(r["runtime"] == "openvino-int8" for r in results) and cpu_peak()["amx_int8"]:
        return (f"note: this CPU has AMX; batch-1 OpenVINO int8 measured faster on AVX-512 VNNI here: try "
                f"--onednn-max-isa {INT8_ISA_CAP} (README, 'oneDNN's instruction set for int8')")
    return ""
