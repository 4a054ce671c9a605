"""Weight conversion from torchvision / timm layouts.

The first half runs in the main environment (no torchvision or timm): round trips through our own exports to the
peer layouts, and the errors. The second half (``-m peer``) builds the peer models with random weights and random
BN statistics and compares outputs in float64, so that the 1e-5 bound leaves no room for float noise (in float64
the errors are at rounding level, so any mapping mistake stands far above it).
"""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mobilenetv3 import ArchSpec, build, get_spec
from mobilenetv3.convert import (
    ConversionError,
    detect_layout,
    from_timm,
    from_torchvision,
    infer_spec,
    load_peer_weights,
    parse_timm_name,
    read_state_dict,
    to_timm,
    to_torchvision,
)
from mobilenetv3.model import MobileNetV3
from mobilenetv3.zoo import mobilenet_v3_large, mobilenet_v3_small

TOL = 1e-5  # max |ours - peer| / max |peer|


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, and non-zero biases, so that every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(ref).all() and ref.std() > 0, "degenerate reference output"
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def outputs(model: nn.Module, size: int = 96, batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        return model.to(dtype).eval()(x)


def our_model(spec: ArchSpec) -> MobileNetV3:
    return randomize(MobileNetV3(spec))


def small_sd(library: str = "torchvision") -> dict:
    spec = mobilenet_v3_small(num_classes=10)
    return to_torchvision(our_model(spec)) if library == "torchvision" else to_timm(our_model(spec.replace(
        bn_eps=1e-5)))


# -- round trips through our exports (main environment) ---------------------------------------------------------


@pytest.mark.parametrize("spec", [mobilenet_v3_large(num_classes=10), mobilenet_v3_small(num_classes=10)],
                         ids=["large", "small"])
def test_torchvision_layout_round_trip(spec, tmp_path):
    model = our_model(spec)
    sd = to_torchvision(model)
    assert detect_layout(sd) == "torchvision"
    assert sd["classifier.0.weight"].shape == (spec.head_channels, spec.last_channels)  # a Linear there
    assert sd["classifier.3.weight"].shape == (10, spec.head_channels)
    assert f"features.{len(spec.blocks) + 1}.0.weight" in sd
    torch.save(sd, tmp_path / "tv.pth")
    back = from_torchvision(tmp_path / "tv.pth")
    assert back.spec == spec  # the zoo spec itself: same name, eps 1e-3, symmetric padding
    assert not back.training
    assert torch.equal(outputs(back, 97), outputs(model, 97))
    assert load_peer_weights(sd).spec == spec


@pytest.mark.parametrize("spec,name", [
    (mobilenet_v3_large(num_classes=10, bn_eps=1e-5), "mobilenetv3_large_100"),
    (mobilenet_v3_small(0.75, num_classes=10, bn_eps=1e-5), "mobilenetv3_small_075"),
    (mobilenet_v3_large(num_classes=10, padding="same"), "tf_mobilenetv3_large_100"),
    (mobilenet_v3_small(minimal=True, num_classes=10, padding="same"), "tf_mobilenetv3_small_minimal_100"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_timm_layout_round_trip(spec, name, tmp_path):
    model = our_model(spec)
    sd = to_timm(model)
    assert detect_layout(sd) == "timm"
    assert "blocks.0.0.conv_dw.weight" in sd and "blocks.0.0.conv_pw.weight" in sd  # depthwise-separable first
    assert "blocks.1.0.conv_pwl.weight" in sd and "conv_head.bias" in sd
    assert f"blocks.{6 if len(spec.blocks) == 15 else 5}.0.conv.weight" in sd  # timm's stage grouping
    save_file(sd, str(tmp_path / "w.safetensors"))
    back = from_timm(tmp_path / "w.safetensors", name)
    assert back.spec == spec
    assert torch.equal(outputs(back, 97), outputs(model, 97))


def test_spec_inferred_from_shapes_when_no_zoo_spec_matches(tmp_path):
    # timm keeps the stem at 16 channels below width 0.75; the zoo scales it to 8 at 0.5
    zoo_spec = mobilenet_v3_small(0.5, num_classes=10, bn_eps=1e-5)
    first = dataclasses.replace(zoo_spec.blocks[0], exp=16)  # no expansion conv: exp equals the input width
    spec = zoo_spec.replace(stem_channels=16, blocks=(first,) + zoo_spec.blocks[1:])
    model = our_model(spec)
    torch.save(to_timm(model), tmp_path / "w.pth")
    back = from_timm(tmp_path / "w.pth", "timm/mobilenetv3_small_050.lamb_in1k")
    assert back.spec.name == "timm_mobilenetv3_small_050"
    assert "stem_channels 16 vs 8" in back.spec.notes
    assert back.spec.replace(name=spec.name, notes=spec.notes) == spec
    assert torch.equal(outputs(back), outputs(model))
    # the spec alone (through JSON) rebuilds the same network, eps and padding included
    rebuilt = build(ArchSpec.from_json(back.spec.to_json()))
    rebuilt.load_state_dict(back.state_dict())
    assert torch.equal(outputs(rebuilt), outputs(model))


def test_explicit_arch_and_wrappers():
    spec = mobilenet_v3_small(num_classes=10)
    model = our_model(spec)
    sd = to_torchvision(model)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    back = from_torchvision(wrapped, arch="mobilenet_v3_small")  # class count follows the file
    assert back.spec.num_classes == 10 and back.spec.bn_eps == 1e-3
    assert torch.equal(outputs(back), outputs(model))
    assert read_state_dict(model).keys() == model.state_dict().keys()
    with pytest.raises(ConversionError, match="has 11 bottleneck blocks .* mobilenet_v3_large has 15"):
        from_torchvision(sd, arch=get_spec("mobilenet_v3_large"))


def test_num_batches_tracked_is_optional():
    sd = {k: v for k, v in small_sd().items() if not k.endswith("num_batches_tracked")}
    model = from_torchvision(sd)
    assert all(int(m.num_batches_tracked) == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_infer_spec():
    sd = small_sd("timm")
    spec = infer_spec(sd, timm_name="mobilenetv3_small_100")
    assert spec == mobilenet_v3_small(num_classes=10, bn_eps=1e-5)
    assert infer_spec(sd, timm_name="tf_mobilenetv3_small_100").padding == "same"
    assert parse_timm_name("tf_mobilenetv3_large_075.in1k").width == 0.75


# -- errors (main environment) ---------------------------------------------------------------------------------


def test_missing_key_is_named():
    sd = small_sd()
    del sd["features.5.block.1.1.running_var"]
    with pytest.raises(ConversionError, match=r"missing key: 'features.5.block.1.1.running_var' \(for "
                                              r"features.5.dw.bn.running_var\)"):
        from_torchvision(sd)
    sd = small_sd("timm")
    del sd["blocks.3.0.se.conv_expand.bias"]
    with pytest.raises(ConversionError, match="blocks.3.0.se.conv_expand.bias"):
        from_timm(sd, "mobilenetv3_small_100")


def test_wrong_shape_is_named():
    sd = small_sd()
    sd["features.3.block.0.1.running_mean"] = torch.zeros(5)
    with pytest.raises(ConversionError, match=r"'features.3.block.0.1.running_mean' is \[5\] in the file, \[88\] "
                                              "expected"):
        from_torchvision(sd)
    sd = small_sd()
    sd["features.4.block.1.0.weight"] = torch.zeros(96, 1, 7, 7)  # a 7x7 depthwise where Small has 5x5
    with pytest.raises(ConversionError, match=r"block 4 \(features.4\) has a 7x7 depthwise conv"):
        from_torchvision(sd)
    with pytest.raises(ConversionError, match=r"'features.4.block.1.0.weight' is \[96, 1, 7, 7\]"):
        from_torchvision(sd, arch="mobilenet_v3_small")
    sd = small_sd()
    sd["classifier.0.weight"] = torch.zeros(1024, 100)
    with pytest.raises(ConversionError, match="classifier"):
        from_torchvision(sd)


def test_block_count_outside_the_tables_is_refused():
    """15 or 11 bottlenecks say Large or Small; any other count needs arch= (Small with its block 11 cut here)."""
    sd = {k: v for k, v in small_sd().items() if not k.startswith("features.11.")}
    sd = {k.replace("features.12.", "features.11.", 1): v for k, v in sd.items()}
    with pytest.raises(ConversionError, match="it has 10 bottleneck blocks"):
        from_torchvision(sd)
    with pytest.raises(ConversionError, match="has 10 bottleneck blocks .*, mobilenet_v3_small has 11"):
        from_torchvision(sd, arch="mobilenet_v3_small")


def test_unexpected_key_is_named():
    sd = small_sd("timm")
    sd["blocks.2.1.extra.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"unexpected key: 'blocks.2.1.extra.weight'"):
        from_timm(sd, "mobilenetv3_small_100")


def test_damaged_and_foreign_files(tmp_path):
    sd = small_sd()
    torch.save(sd, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="could not read .*cut.pth"):
        from_torchvision(tmp_path / "cut.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ConversionError, match="could not read .*cut.safetensors"):
        from_torchvision(tmp_path / "cut.safetensors")
    (tmp_path / "text.pth").write_text("not weights\n")
    with pytest.raises(ConversionError, match="could not read"):
        from_torchvision(tmp_path / "text.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="holds a list, not a state dict"):
        from_torchvision(tmp_path / "list.pth")
    torch.save({"weights": "none", "epoch": 1}, tmp_path / "dict.pth")
    with pytest.raises(ConversionError, match="not a state dict: 2 entries are not tensors"):
        from_torchvision(tmp_path / "dict.pth")
    with pytest.raises(FileNotFoundError):
        from_torchvision(tmp_path / "absent.pth")
    with pytest.raises(ConversionError, match="cannot tell which library"):
        load_peer_weights({"encoder.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match="is empty"):
        from_torchvision({})


def test_wrong_library_or_name():
    tv, timm_sd = small_sd(), small_sd("timm")
    with pytest.raises(ConversionError, match="torchvision state dict, not a timm one; use from_torchvision"):
        from_timm(tv, "mobilenetv3_small_100")
    with pytest.raises(ConversionError, match="needs its model name"):
        load_peer_weights(timm_sd)
    with pytest.raises(ConversionError, match="unsupported timm model 'mobilenetv3_rw'"):
        from_timm(timm_sd, "mobilenetv3_rw")
    with pytest.raises(ConversionError, match="says large"):
        from_timm(timm_sd, "mobilenetv3_large_100")
    with pytest.raises(ConversionError, match="says minimal"):
        from_timm(timm_sd, "tf_mobilenetv3_small_minimal_100")
    with pytest.raises(ConversionError, match="only pads symmetrically"):
        to_torchvision(MobileNetV3(mobilenet_v3_small(padding="same")))
    with pytest.raises(ConversionError, match="no torchvision MobileNetV3 layout"):
        to_torchvision(MobileNetV3(get_spec("mobilenet_v2")))


# -- against the peers (peer environment) ----------------------------------------------------------------------


def _compare(peer: nn.Module, ours: MobileNetV3, sizes) -> float:
    peer, ours = peer.double().eval(), ours.double().eval()
    worst = 0.0
    for size in sizes:
        err = rel_err(outputs(ours, size, dtype=torch.float64), outputs(peer, size, dtype=torch.float64))
        assert err <= TOL, f"relative error {err:.3g} at {size}x{size}"
        worst = max(worst, err)
    return worst


@pytest.mark.peer
@pytest.mark.parametrize("name,kwargs,zoo_name", [
    ("mobilenet_v3_large", {}, "mobilenet_v3_large"),
    ("mobilenet_v3_small", {}, "mobilenet_v3_small"),
    ("mobilenet_v3_large", {"width_mult": 0.75}, "torchvision_mobilenet_v3_large"),  # torchvision rounds its own way
])
def test_torchvision(name, kwargs, zoo_name, tmp_path):
    tv = pytest.importorskip("torchvision")
    peer = randomize(getattr(tv.models, name)(num_classes=17, **kwargs))
    torch.save(peer.state_dict(), tmp_path / "w.pth")
    ours = from_torchvision(tmp_path / "w.pth")
    assert ours.spec.name == zoo_name and ours.num_classes == 17
    assert (ours.spec.bn_eps, ours.spec.padding) == (1e-3, "symmetric")
    # the export is the exact inverse: it loads strictly into torchvision's module
    exported = to_torchvision(ours)
    assert exported.keys() == peer.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in peer.state_dict().items())
    _compare(peer, ours, (224, 193) if kwargs else (224,))


TIMM_MODELS = [
    ("mobilenetv3_large_100", "mobilenet_v3_large", (224,)),
    ("mobilenetv3_small_100", "mobilenet_v3_small", (224,)),
    ("mobilenetv3_large_075", "mobilenet_v3_large_075", (224,)),
    ("mobilenetv3_small_075", "mobilenet_v3_small_075", (224,)),
    ("mobilenetv3_small_050", "timm_mobilenetv3_small_050", (224, 193)),  # timm's fixed 16-channel stem
    ("tf_mobilenetv3_large_100", "mobilenet_v3_large", (224, 193)),
    ("tf_mobilenetv3_large_075", "mobilenet_v3_large_075", (224, 193)),
    ("tf_mobilenetv3_small_100", "mobilenet_v3_small", (224, 193)),
    ("tf_mobilenetv3_small_075", "mobilenet_v3_small_075", (224, 193)),
    ("tf_mobilenetv3_large_minimal_100", "mobilenet_v3_large_minimal", (224, 193)),
    ("tf_mobilenetv3_small_minimal_100", "mobilenet_v3_small_minimal", (224, 193)),
]


@pytest.mark.peer
@pytest.mark.parametrize("name,zoo_name,sizes", TIMM_MODELS, ids=[m[0] for m in TIMM_MODELS])
def test_timm(name, zoo_name, sizes, tmp_path):
    timm = pytest.importorskip("timm")
    peer = randomize(timm.create_model(name, pretrained=False, num_classes=17))
    sd = peer.state_dict()
    torch.save(sd, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    ours = from_timm(tmp_path / "w.pth", name)
    from_st = from_timm(tmp_path / "w.safetensors", name)
    assert from_st.spec == ours.spec
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), from_st.state_dict().values(),
                                                    strict=True))
    tf = name.startswith("tf_")
    assert ours.spec.name == zoo_name and ours.num_classes == 17
    assert (ours.spec.bn_eps, ours.spec.padding) == ((1e-3, "same") if tf else (1e-5, "symmetric"))
    exported = to_timm(ours)
    assert exported.keys() == sd.keys()
    assert all(torch.equal(exported[k], v) for k, v in sd.items())
    rebuilt = build(ArchSpec.from_json(ours.spec.to_json()))  # the spec alone reproduces the model
    rebuilt.load_state_dict(ours.state_dict())
    _compare(peer, rebuilt, sizes)


@pytest.mark.peer
def test_tf_padding_matters():
    """The comparison can tell: a tf_ file read as a symmetric-padding, eps-1e-5 model gives other outputs."""
    timm = pytest.importorskip("timm")
    peer = randomize(timm.create_model("tf_mobilenetv3_small_100", pretrained=False)).double()
    wrong = from_timm(peer.state_dict(), "mobilenetv3_small_100").double()
    assert rel_err(outputs(wrong, 224, dtype=torch.float64), outputs(peer, 224, dtype=torch.float64)) > 1e-3
