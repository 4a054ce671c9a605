"""A latency table: the measured latency of every block a search space can produce, keyed by block type and shape.

Keys follow Once-for-All's MobileNetV3 table (``ofa/nas/efficiency_predictor``), so its tables load here and ours
there. One key per piece of the network, in forward order (:func:`block_keys`):

* ``Conv-input:HxWxC-output:HxWxC``: the stem (conv, BN, activation);
* ``expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:0|1-se:0|1-hs:0|1``: one bottleneck;
  ``E`` is the expansion width in channels (OFA's MobileNetV3 table records it so, not as a ratio; ``E`` = the
  input width means no 1x1 expansion), ``idskip`` the residual, ``hs`` h-swish (else ReLU);
* ``Conv_1-input:HxWxC-output:HxWxC``: the last 1x1 conv (OFA's ``final_expand_layer``);
* ``AvgPool2D-input:HxWxC-output:1x1xC``: global pooling;
* ``Conv_2-input:1x1xC-output:1x1xC``: the head conv after pooling (OFA's ``feature_mix_layer``);
* ``Logits-input:1x1xC-output:N``: the classifier.

What a key leaves out (the stem's kernel and activation, the last stage's activations, how SE is sized, padding) is
the same for every spec of a space and is recorded once, in the header's ``conventions``; a spec with other
conventions is refused rather than costed with the wrong entries. The header also records what makes the figures
valid (CPU, runtime and version, threads, resolution, oneDNN cap, timing settings): :func:`check_compatible`
refuses a table from elsewhere, naming the difference.

A table file is JSON: ``{"format", "header", "entries": {key: {count, median, p10, p90}}, "correction"}`` in ms
(an entry timed in several sessions also lists their medians, ``sessions``, and its median is theirs).
:func:`read_ofa_yaml` / :func:`write_ofa_yaml` convert from and to OFA's YAML layout (``key: {count, mean, std}``);
OFA records a mean only, which is read as the median. The reader parses that flat layout itself, so PyYAML is not
needed.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec import ArchSpec, spatial_out

TABLE_FORMAT = 1
KINDS = ("Conv", "expanded_conv", "Conv_1", "AvgPool2D", "Conv_2", "Logits")
BLOCK_FIELDS = ("expand", "kernel", "stride", "idskip", "se", "hs")
ENTRY_FIELDS = ("count", "median", "p10", "p90")
ACTS = {"relu": 0, "hswish": 1}
# spec fields that no key records: equal for every spec of a space, checked against the table's header
CONVENTIONS = ("in_channels", "stem_kernel", "stem_stride", "stem_act", "last_act", "last_se", "head_act",
               "se_ratio", "se_divisor", "se_base", "se_gate", "se_inner_act", "padding")
# header fields that make a table's figures valid on a machine; a difference is refused unless forced
# (``cpu_id`` since 2026-12: a hypervisor can give two CPU generations one model name)
MATCHED = ("cpu", "cpu_id", "runtime", "threads", "resolution")


class TableFileError(ValueError):
    """A table file that cannot be read (missing, corrupt, not a table); the message names the file."""


class TableMismatchError(ValueError):
    """A table measured elsewhere (another CPU, runtime, thread count, resolution or spec conventions)."""


# -- keys ---------------------------------------------------------------------------------------------------
def shape_str(*dims: int) -> str:
    return "x".join(str(int(d)) for d in dims)


def format_key(kind: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...], **fields: int) -> str:
    """A key: ``kind-input:..-output:..`` and, for ``expanded_conv``, the block fields in OFA's order."""
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r} (choose from {', '.join(KINDS)})")
    parts = [kind, f"input:{shape_str(*input_shape)}", f"output:{shape_str(*output_shape)}"]
    if kind == "expanded_conv":
        missing = [f for f in BLOCK_FIELDS if f not in fields]
        if missing:
            raise ValueError(f"an expanded_conv key needs {', '.join(missing)}")
        parts += [f"{f}:{int(fields[f])}" for f in BLOCK_FIELDS]
    return "-".join(parts)


KEY_PART = re.compile(r"^(\w+):(\d+(?:x\d+)*)$")


def parse_key(key: str) -> dict[str, Any]:
    """A key's parts: ``{"kind", "input": (H, W, C), "output": (...), <block fields>: int}``; ValueError when
    it is not in the format above (so a typo never matches silently)."""
    kind, *rest = key.split("-")
    if kind not in KINDS:
        raise ValueError(f"latency key {key!r}: unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    out: dict[str, Any] = {"kind": kind}
    for part in rest:
        m = KEY_PART.match(part)
        if not m:
            raise ValueError(f"latency key {key!r}: cannot read {part!r}")
        name, value = m.groups()
        out[name] = tuple(int(v) for v in value.split("x")) if name in ("input", "output") else int(value)
    wanted = ("input", "output") + (BLOCK_FIELDS if kind == "expanded_conv" else ())
    if set(out) - {"kind"} != set(wanted):
        raise ValueError(f"latency key {key!r}: a {kind} key has exactly {', '.join(wanted)}")
    if format_key(kind, out["input"], out["output"], **{f: out[f] for f in BLOCK_FIELDS if f in out}) != key:
        raise ValueError(f"latency key {key!r} is not in canonical form")
    return out


def act_flag(act: str) -> int:
    if act not in ACTS:
        raise ValueError(f"the key format records ReLU or h-swish blocks only, not {act!r}")
    return ACTS[act]


def expanded_conv_key(hw: int, in_ch: int, kernel: int, exp: int, out: int, stride: int, se: bool, act: str) -> str:
    out_hw = spatial_out(hw, kernel, stride)
    return format_key("expanded_conv", (hw, hw, in_ch), (out_hw, out_hw, out), expand=exp, kernel=kernel,
                      stride=stride, idskip=int(stride == 1 and in_ch == out), se=int(se), hs=act_flag(act))


def stem_key(spec: ArchSpec, resolution: int) -> str:
    hw = spatial_out(resolution, spec.stem_kernel, spec.stem_stride)
    return format_key("Conv", (resolution, resolution, spec.in_channels), (hw, hw, spec.stem_channels))


def last_stage_keys(spec: ArchSpec, hw: int, channels: int) -> list[str]:
    """The keys after the last block, given the feature map entering the last stage."""
    keys = []
    if spec.last_channels:
        keys.append(format_key("Conv_1", (hw, hw, channels), (hw, hw, spec.last_channels)))
        channels = spec.last_channels
    keys.append(format_key("AvgPool2D", (hw, hw, channels), (1, 1, channels)))
    if spec.head_channels:
        keys.append(format_key("Conv_2", (1, 1, channels), (1, 1, spec.head_channels)))
        channels = spec.head_channels
    keys.append(format_key("Logits", (1, 1, channels), (spec.num_classes,)))
    return keys


def block_keys(spec: ArchSpec, resolution: int | None = None) -> list[str]:
    """The keys of ``spec`` at ``resolution`` (default: the spec's), in forward order: stem, each block, last
    stage. Dilated blocks have no key (the search space never makes them)."""
    res = resolution or spec.resolution
    keys = [stem_key(spec, res)]
    hw = spatial_out(res, spec.stem_kernel, spec.stem_stride)
    for b, in_ch in zip(spec.blocks, spec.block_inputs(), strict=True):
        if b.dilation != 1:
            raise ValueError("dilated blocks have no latency key (the key format has no dilation)")
        keys.append(expanded_conv_key(hw, in_ch, b.kernel, b.exp, b.out, b.stride, b.se, b.act))
        hw = spatial_out(hw, b.kernel, b.stride)
    return keys + last_stage_keys(spec, hw, spec.blocks[-1].out if spec.blocks else spec.stem_channels)


def conventions_of(spec: ArchSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in CONVENTIONS}


# -- the table ----------------------------------------------------------------------------------------------
@dataclass
class LatencyTable:
    """A table's header (what the figures are valid for), its entries (ms) and the predictor's correction."""

    header: dict[str, Any]
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    correction: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "header": self.header, "entries": self.entries,
                "correction": self.correction}

    def save(self, path: str | os.PathLike) -> None:
        """Write the table atomically (a reader sees the old file or the new one, never a part)."""
        from ..train.commit import atomic_write_json

        atomic_write_json(path, self.to_dict())

    def median(self, key: str) -> float:
        return float(self.entries[key]["median"])


def table_relative(table: LatencyTable) -> bool:
    """Whether a table's entries were timed against a reference network (its header's ``timing.relative``):
    its end-to-end measurements must be too, and scaled by the same ``timing.reference_ms``."""
    timing = table.header.get("timing")
    return bool(timing.get("relative")) if isinstance(timing, dict) else False


def table_clock(table: LatencyTable) -> str:
    """The clock a table's entries were timed with (``wall`` for tables that record none), which its end-to-end
    checks use too."""
    timing = table.header.get("timing")
    return str(timing.get("clock", "wall")) if isinstance(timing, dict) else "wall"


def check_entry(key: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or "median" not in entry:
        raise ValueError(f"entry {key!r} has no median")
    value = float(entry["median"])
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"entry {key!r} has median {entry['median']!r} (a positive number of ms is needed)")
    out: dict[str, Any] = {k: float(entry[k]) if k != "count" else int(entry[k]) for k in ENTRY_FIELDS if k in entry}
    if "sessions" in entry:  # the medians of the sessions an entry was timed in (a build with sessions > 1)
        sessions = entry["sessions"]
        if not isinstance(sessions, list) or not sessions or not all(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in sessions):
            raise ValueError(f"entry {key!r} has sessions {sessions!r} (a list of positive ms is needed)")
        out["sessions"] = [float(v) for v in sessions]
    return out


def entry_sessions(entry: dict[str, Any]) -> int:
    """How many sessions an entry was timed in (one unless it records them)."""
    return len(entry.get("sessions", ())) or 1


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table file (JSON; ``.yaml`` / ``.yml``: OFA's layout, :func:`read_ofa_yaml`); a
    :class:`TableFileError` naming the file when it is missing or not a valid table."""
    path = Path(path)
    if not path.is_file():
        raise TableFileError(f"latency table not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        return read_ofa_yaml(path)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ValueError(f"not a latency table of format {TABLE_FORMAT}")
        if not isinstance(data.get("header"), dict) or not isinstance(data.get("entries"), dict):
            raise ValueError("a table needs a 'header' and an 'entries' object")
        entries = {}
        for key, entry in data["entries"].items():
            parse_key(key)
            entries[key] = check_entry(key, entry)
        correction = data.get("correction")
        if correction is not None and not isinstance(correction, dict):
            raise ValueError("'correction' must be an object or null")
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise TableFileError(f"{path}: corrupt latency table ({e})") from None
    return LatencyTable(data["header"], entries, correction)


def check_compatible(table: LatencyTable, *, force: bool = False, spec: ArchSpec | None = None,
                     **expected: Any) -> list[str]:
    """The differences between the table's header and ``expected`` (``cpu``, ``cpu_id``, ``runtime``, ``threads``,
    ``resolution``; a header without the field, as an imported OFA table, is not checked), and between its
    recorded conventions and ``spec``'s. Raises :class:`TableMismatchError` naming them unless ``force``; returns
    them (for a warning) when forced."""
    diffs = []
    for name in MATCHED:
        if name in expected and expected[name] is not None and table.header.get(name) is not None \
                and table.header[name] != expected[name]:
            diffs.append(f"{name}: the table has {table.header[name]!r}, this measurement {expected[name]!r}")
    conventions = table.header.get("conventions")
    if spec is not None and conventions:
        for name, value in conventions.items():
            if getattr(spec, name, value) != value:
                diffs.append(f"spec {name}: the table has {value!r}, {spec.name} {getattr(spec, name)!r}")
    if diffs and not force:
        raise TableMismatchError("the latency table does not match (use --force / force=True to use it anyway): "
                                 + "; ".join(diffs))
    return diffs


# -- Once-for-All's YAML layout -----------------------------------------------------------------------------
def _yaml_scalar(text: str) -> str:
    text = text.split(" #", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def read_ofa_yaml(path: str | os.PathLike) -> LatencyTable:
    """A table from OFA's YAML layout: each key a mapping with ``count``, ``mean`` and ``std`` (ms), in block
    style (``key:`` then indented ``field: value`` lines) or flow style (``key: {count: N, mean: ms}``). The mean
    becomes the median (OFA records no median); p10/p90 are left out. The header is empty but for its source,
    so the machine checks cannot apply: the table's provenance is the user's to know."""
    path = Path(path)
    entries: dict[str, dict[str, float]] = {}
    current: dict[str, Any] | None = None
    try:
        lines = path.read_text().splitlines()
        for n, raw in enumerate(lines, start=1):
            line = raw.rstrip()
            if not line.strip() or line.lstrip().startswith("#") or line.strip() in ("---", "..."):
                continue
            if not line[0].isspace():  # a key line: "key:" or "key: {..}"
                head, sep, tail = line.rpartition(": {") if line.endswith("}") else (line[:-1], ":", "")
                if not sep or (not tail and not line.endswith(":")):
                    raise ValueError(f"line {n}: expected 'key:' or 'key: {{...}}'")
                key = _yaml_scalar(head)
                parse_key(key)
                current = entries.setdefault(key, {})
                for item in filter(None, (p.strip() for p in tail.rstrip("}").split(","))):
                    name, _, value = item.partition(":")
                    current[name.strip()] = float(_yaml_scalar(value))
            else:
                if current is None:
                    raise ValueError(f"line {n}: a field before any key")
                name, sep, value = line.strip().partition(":")
                if not sep:
                    raise ValueError(f"line {n}: expected 'field: value'")
                current[name.strip()] = float(_yaml_scalar(value))
        out = {}
        for key, e in entries.items():
            if "mean" not in e and "median" not in e:
                raise ValueError(f"entry {key!r} has no mean")
            out[key] = check_entry(key, {"count": int(e.get("count", 1)), "median": e.get("median", e.get("mean"))})
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise TableFileError(f"{path}: cannot read it as Once-for-All's YAML latency table ({e})") from None
    return LatencyTable({"source": f"Once-for-All YAML: {path.name}", "units": "ms"}, out)


def write_ofa_yaml(table: LatencyTable, path: str | os.PathLike) -> None:
    """The table in OFA's YAML layout (``count``, ``mean`` and ``std``; our median is written as the mean and the
    spread as ``std`` ~ (p90 - p10) / 2.563, the normal distribution's ratio)."""
    from ..train.commit import atomic_write_text

    lines = []
    for key, e in table.entries.items():
        std = (e["p90"] - e["p10"]) / 2.563 if "p90" in e and "p10" in e else 0.0
        lines += [f"{key}:", f"  count: {int(e.get('count', 1))}", f"  mean: {e['median']:.6g}", f"  std: {std:.6g}"]
    atomic_write_text(path, "\n".join(lines) + "\n")


__all__ = ["CONVENTIONS", "KINDS", "LatencyTable", "TableFileError", "TableMismatchError", "block_keys",
           "check_compatible", "conventions_of", "entry_sessions", "expanded_conv_key", "format_key", "last_stage_keys",
           "load_table", "parse_key", "read_ofa_yaml", "stem_key", "table_clock", "table_relative", "write_ofa_yaml"]
