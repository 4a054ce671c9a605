"""int8 with PyTorch's PT2E flow: ``torch.export`` -> ``prepare_pt2e(X86InductorQuantizer)`` -> calibration ->
``convert_pt2e`` (from ``torchao``; older PyTorch kept it in ``torch.ao``), run by ``torch.compile`` with Inductor's
freezing, which lowers the quantised convolutions to oneDNN's ``qconv_pointwise``. At batch 1 oneDNN's fixed
per-convolution cost makes this slower than ONNX Runtime int8 (measured: docs/benchmarks.md), so it is the
second toolchain (``mnv3 export --int8 --int8-toolchain pt2e``); its save/load round trip is exact."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...extras import MissingExtraError
from ..evaluate import compare_outputs
from ..fold import fold_bn
from ..output import writable_output
from .calibration import CalibrationError


def pt2e_modules() -> tuple[Any, Any, Any]:
    """``(prepare_pt2e, convert_pt2e, x86_inductor_quantizer)``; :class:`MissingExtraError` naming the ``pt2e``
    extra when torchao (or an older PyTorch's own PT2E) is not there."""
    # torchao logs notes about optional GPU kernels (triton, CUTLASS) it cannot load on a CPU-only machine
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        try:  # PyTorch < 2.10 kept PT2E in torch.ao
            from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torch.ao.quantization.quantizer import x86_inductor_quantizer as xiq
        except ImportError:
            raise MissingExtraError("torchao is not installed (needed for PT2E int8 quantisation); install it "
                                    "with: pip install 'mobilenetv3[pt2e]'") from None
    finally:
        logging.disable(previous)
    return prepare_pt2e, convert_pt2e, xiq


def quantize_pt2e(model: nn.Module, calibration: Sequence[np.ndarray | torch.Tensor]) -> torch.fx.GraphModule:
    """PT2E static int8 quantisation with the X86InductorQuantizer (per-channel weights), calibrated on
    ``calibration``; returns the converted graph module (run it under :func:`compile_pt2e` for speed)."""
    prepare_pt2e, convert_pt2e, xiq = pt2e_modules()
    calibration = [torch.as_tensor(b) for b in calibration]
    if not calibration:
        raise CalibrationError("no calibration images were given")
    example = calibration[0]
    model = fold_bn(model).eval()
    exported = torch.export.export(model, (example,))
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for b in calibration:
            prepared(b)
    return convert_pt2e(prepared)


def save_pt2e(module: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor) -> None:
    """Save a converted PT2E module as a ``torch.export`` program (``.pt2``) that :func:`load_pt2e` reads back."""
    pt2e_modules()
    path = writable_output(path)
    program = torch.export.export(module, (example,))
    torch.export.save(program, str(path))


def load_pt2e(path: str | os.PathLike) -> torch.nn.Module:
    """The module of a program saved by :func:`save_pt2e`."""
    pt2e_modules()  # registers torchao's quantise/dequantise ops that the program refers to
    return torch.export.load(str(path)).module()


def compile_pt2e(module: torch.nn.Module, example: torch.Tensor, cpp_wrapper: bool = False
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` of a PT2E module, compiled now on ``example`` with Inductor's freezing on (it lowers the
    quantised convolutions to oneDNN's ``qconv_pointwise`` with prepacked weights) and, with ``cpp_wrapper``,
    its C++ wrapper. Inductor's settings are patched for this compilation only."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(module)
    with inductor_config.patch(freezing=True, cpp_wrapper=cpp_wrapper), torch.no_grad():
        compiled(example)
    return compiled



def export_pt2e(model: nn.Module, path: str | os.PathLike, calibration: Sequence[np.ndarray | torch.Tensor],
                input_shape: Sequence[int]) -> dict[str, Any]:
    """Quantise ``model`` with :func:`quantize_pt2e`, save it as a ``torch.export`` program at ``path`` and load it
    back; ``RuntimeError`` unless the reloaded program gives exactly the quantised module's outputs. Returns what
    was written and how the int8 outputs compare with the float model's on (up to 32 of) the calibration
    batches, in the form of :meth:`~.qdq.QuantizeReport.to_dict`."""
    writable_output(path)
    tensors = [torch.as_tensor(b) for b in calibration]
    quantized = quantize_pt2e(model, tensors)
    save_pt2e(quantized, path, tensors[0])
    loaded = load_pt2e(path)
    sample = tensors[: min(len(tensors), 32)]
    with torch.no_grad():
        before = np.concatenate([quantized(t).numpy() for t in sample])
        after = np.concatenate([loaded(t).numpy() for t in sample])
        want = np.concatenate([model.eval()(t).numpy() for t in sample])
    if not np.array_equal(before, after):
        raise RuntimeError(f"{path}: the reloaded program's outputs differ from the quantised module's")
    return {"path": str(path), "toolchain": "pt2e", "input_shape": list(input_shape),
            "calibration_samples": len(tensors), "checks": {**compare_outputs(after, want),
                                                            "identical_after_reload": True}}

