"""Measuring a model end to end: a runtime of :data:`RUNTIMES` (a deploy step composed with a
:mod:`mobilenetv3.runtime` backend, :mod:`.targets`), timed the paper's way (:mod:`.measure`), profiled per stage
(:mod:`.profile`), and reported as ``mnv3 latency`` prints it (:mod:`.report`).

The names below are this package's API; the harness, machine facts and backends they build on are re-exported
from :mod:`mobilenetv3.runtime` (and the input checks from :mod:`mobilenetv3.inputs`) so that code importing
them from here keeps working. The paper comparisons and the peer comparison are :mod:`mobilenetv3.bench`.
"""

from ..extras import MissingExtraError, require
from ..inputs import (
    InputError,
    as_model,
    check_input,
    check_input_shape,
    example_input,
    min_resolution,
    model_dtype,
    model_spec,
    resolve_input,
)
from ..runtime.backend import Prepared
from ..runtime.cpu import (
    INT8_ISA_CAP,
    ONEDNN_ISA_VARIABLE,
    ONEDNN_ISAS,
    check_onednn_isa,
    cpu_model,
    cpu_peak,
    isa_advice,
    isa_cap_note,
    machine_info,
    onednn_isa_cap,
    pinned_threads,
    set_onednn_isa_cap,
)
from ..runtime.onnxruntime import ort_session, parse_ort_profile, profile_onnx
from ..runtime.openvino import openvino_compile, openvino_forward, profile_openvino
from ..runtime.peer_env import PEER_SETUP_HINT, PeerUnavailableError, find_peer_python
from ..runtime.signal_stack import keeping_signal_stack, signal_stack
from ..runtime.timing import CLOCKS, TimingStats, clock_timer, percentile, time_callable, time_interleaved
from ..runtime.torchscript import freeze_torchscript
from .measure import FILE_RUNTIMES, LatencyResult, measure_latency, measure_onnx_file, model_name
from .profile import (
    LayerTime,
    layer_names,
    profile_layers,
    profile_onnxruntime,
    profile_onnxruntime_int8,
    stage_madds,
    stage_names,
)
from .report import file_latency_report, latency_report
from .targets import (
    CORE_RUNTIMES,
    DEFAULT_FROZEN,
    FROZEN_METHODS,
    OPENVINO_RUNTIMES,
    RUNTIMES,
    TARGETS,
    Target,
    available_runtimes,
    prepare_runtime,
)

__all__ = [
    "CLOCKS", "CORE_RUNTIMES", "DEFAULT_FROZEN", "FILE_RUNTIMES", "FROZEN_METHODS", "INT8_ISA_CAP", "InputError",
    "LatencyResult", "LayerTime", "MissingExtraError", "ONEDNN_ISAS", "ONEDNN_ISA_VARIABLE", "OPENVINO_RUNTIMES",
    "PEER_SETUP_HINT", "PeerUnavailableError", "Prepared", "RUNTIMES", "TARGETS", "Target", "TimingStats",
    "as_model", "available_runtimes", "check_input", "check_input_shape", "check_onednn_isa", "clock_timer",
    "cpu_model", "cpu_peak", "example_input", "file_latency_report", "find_peer_python", "freeze_torchscript",
    "isa_advice", "isa_cap_note", "keeping_signal_stack", "latency_report", "layer_names", "machine_info",
    "measure_latency", "measure_onnx_file", "min_resolution", "model_dtype", "model_name", "model_spec",
    "onednn_isa_cap", "openvino_compile", "openvino_forward", "ort_session", "parse_ort_profile", "percentile",
    "pinned_threads", "prepare_runtime", "profile_layers", "profile_onnx", "profile_onnxruntime",
    "profile_onnxruntime_int8", "profile_openvino", "require", "resolve_input", "set_onednn_isa_cap",
    "signal_stack", "stage_madds", "stage_names", "time_callable", "time_interleaved",
]
