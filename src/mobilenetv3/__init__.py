"""MobileNetV3 (Howard et al. 2019, "Searching for MobileNetV3") in PyTorch.

Specs describe architectures (:mod:`mobilenetv3.spec`, :mod:`mobilenetv3.zoo`); :func:`build` turns one into a
module; :mod:`mobilenetv3.cost` counts its parameters and multiply-adds.
"""

from .cost import count_madds, count_params, spec_cost
from .model import MobileNetV3, build, mnasnet_a1, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from .spec import ArchSpec, BlockSpec, SpecError, make_divisible, with_output_stride
from .zoo import REGISTRY, get_spec, list_models

__version__ = "0.1.0"

__all__ = [
    "ArchSpec", "BlockSpec", "MobileNetV3", "REGISTRY", "SpecError", "build", "count_madds", "count_params",
    "get_spec", "list_models", "make_divisible", "mnasnet_a1", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "spec_cost", "with_output_stride",
]
