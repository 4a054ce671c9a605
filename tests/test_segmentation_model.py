"""Segmentation heads on MobileNet backbones: shapes, the head wiring against a hand-assembled computation, RF2 and
the skip taps against the reference code's channel counts, exact costs against the hook counters and against the
paper's Tables 7 and 8, SegSpec JSON and its refusals, ONNX export."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenetv3 import get_spec
from mobilenetv3.cost import count_madds, count_params
from mobilenetv3.segmentation import (
    FIGURE10_POOLING,
    SEG_MODELS,
    SegmentationModel,
    SegSpec,
    SegSpecError,
    build_segmentation,
    find_low_tap,
    get_seg_spec,
    lraspp_mobilenet_v3_large,
    lraspp_mobilenet_v3_small,
    raspp_mobilenet_v2,
    reduce_last_block,
    seg_cost,
    seg_spec,
)
from mobilenetv3.segmentation.paper import EXPLAINED, TOLERANCE, paper_comparison

torch.set_num_threads(1)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine terms and conv biases away from their identity initialisation, so that a
    wiring mistake cannot hide behind a BN that does nothing or a bias that is zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.rand(m.out_channels, generator=g) * 0.2 - 0.1)
    return model.eval()


# -- shapes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_small", "raspp_mobilenet_v3_small"])
@pytest.mark.parametrize("output_stride", [16, 32])
@pytest.mark.parametrize("size", [(64, 128), (67, 93), (97, 50)])
def test_output_and_feature_shapes(name, output_stride, size):
    model = build_segmentation(name, num_classes=5, output_stride=output_stride).eval()
    h, w = size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        high, low = model.forward_backbone(x)
        out = model(x)
    assert out.shape == (2, 5, h, w)
    assert high.shape[-2:] == (-(-h // output_stride), -(-w // output_stride)) == model.spec.feature_size(h, w)
    if name.startswith("lraspp"):
        assert low.shape == (2, 88, -(-h // 8), -(-w // 8))  # Small block 3's depthwise output, stride 8
    else:
        assert low is None


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "lraspp_mobilenet_v2", "raspp_mobilenet_v2"])
def test_other_backbones_run_at_an_odd_size(name):
    model = build_segmentation(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 75, 101)).shape == (1, 19, 75, 101)


def test_output_stride_8_and_no_skip():
    model = build_segmentation("lraspp_mobilenet_v3_small", output_stride=8, low_tap="none").eval()
    assert model.head.classify_low is None
    with torch.no_grad():
        high, low = model.forward_backbone(torch.randn(1, 3, 64, 96))
        assert high.shape[-2:] == (8, 12) and low is None
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 19, 64, 96)


# -- head wiring against a hand computation -------------------------------------------------------------------
def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    v = (1, -1, 1, 1)
    return (x - m.running_mean.view(v)) / torch.sqrt(m.running_var.view(v) + m.eps) * m.weight.view(v) \
        + m.bias.view(v)


def conv(x: torch.Tensor, m: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, m.weight, m.bias)


def up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def backbone_and_depthwise(model: SegmentationModel, x: torch.Tensor, block: int):
    """The final features from the backbone's own forward, and the depthwise output of ``block`` from a hook:
    independent of the model's walker."""
    captured = []
    handle = model.backbone.features[block].dw.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        high = model.backbone.forward_features(x)
    finally:
        handle.remove()
    return high, captured[0]


def test_global_pool_lraspp_matches_a_hand_assembled_computation():
    model = randomise(lraspp_mobilenet_v3_small(num_classes=4))
    x = torch.randn(2, 3, 45, 61, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        high, low = backbone_and_depthwise(model, x, 3)
        head = model.head
        a = torch.relu(bn(F.conv2d(high, head.conv.conv.weight), head.conv.bn))
        s = torch.sigmoid(conv(high.mean((2, 3), keepdim=True), head.gate_conv))
        y = conv(up(a * s, low.shape[-2:]), head.classify_high) + conv(low, head.classify_low)
        expected = up(y, (45, 61))
        got = model(x)
    assert low.shape == (2, 88, 6, 8) and high.shape == (2, 288, 3, 4)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_raspp_matches_a_hand_assembled_computation():
    model = randomise(build_segmentation("raspp_mobilenet_v3_small", num_classes=3, filters=32))
    x = torch.randn(1, 3, 50, 70, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        high = model.backbone.forward_features(x)
        h = model.head
        b = torch.relu(bn(F.conv2d(high, h.branch.conv.weight), h.branch.bn))
        p = torch.relu(bn(F.conv2d(high.mean((2, 3), keepdim=True), h.pool_conv.conv.weight), h.pool_conv.bn))
        p = p.expand(-1, -1, *b.shape[-2:])  # bilinear upsampling of a 1x1 map repeats it
        z = torch.relu(bn(F.conv2d(torch.cat([p, b], 1), h.project.conv.weight), h.project.bn))
        expected = up(conv(z, h.classify), (50, 70))
        assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-5)


def test_each_low_tap_is_the_layer_it_names():
    """On Large, whose block 6 has SE: the walker that takes the depthwise output must still run the whole block."""
    x = torch.randn(1, 3, 64, 64)
    for tap, block, channels in (("stride8_depthwise", 6, 120), ("stride8_output", 6, 40),
                                 ("stride8_first_output", 4, 40)):
        model = randomise(lraspp_mobilenet_v3_large(low_tap=tap))
        with torch.no_grad():
            high, low = model.forward_backbone(x)
            if tap == "stride8_depthwise":
                expected_high, expected = backbone_and_depthwise(model, x, block)
            else:
                out = model.backbone.forward_taps(x, [f"block{block}", "features"])
                expected_high, expected = out["features"], out[f"block{block}"]
        assert low.shape[1] == channels and torch.equal(low, expected), tap
        assert torch.equal(high, expected_high), tap


def test_kernel_pooling_spanning_the_whole_map_equals_global_pooling():
    spec = get_seg_spec("lraspp_mobilenet_v3_small", num_classes=3)
    kernel = spec.replace(pooling="kernel", pool_kernel=(4, 6), pool_stride=(1, 1))  # 64x96 -> 4x6 features
    a, b = randomise(SegmentationModel(spec)), SegmentationModel(kernel).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6)
        assert b(torch.randn(1, 3, 100, 130)).shape == (1, 3, 100, 130)  # a 7x9 map: 4x4 pooled positions
    assert kernel.pooled_size(100, 130) == (4, 4)


def test_figure10_pooling_sizes_and_too_small_inputs():
    spec = get_seg_spec("lraspp_mobilenet_v3_small", **FIGURE10_POOLING)
    # 49 = (769 - 1) / 16 + 1: DeepLab's image_pooling_crop_size 769 at output stride 16
    assert spec.min_input() == (769, 769)
    assert spec.pooled_size(1024, 2048) == (1, 4)  # 64x128 map: (64-49)//16+1, (128-49)//20+1
    assert spec.pooled_size(1025, 2049) == (2, 5)  # 65x129 map: (65-49)//16+1, (129-49)//20+1
    model = SegmentationModel(spec).eval()
    message = r"input 256x512 gives a 16x32 feature map at output stride 16, smaller than the pooling kernel " \
              r"49x49 .*at least 769x769"
    with pytest.raises(SegSpecError, match=message), torch.no_grad():
        model(torch.randn(1, 3, 256, 512))
    with pytest.raises(SegSpecError, match="smaller than the pooling kernel"):
        seg_cost(spec, (512, 1024))


# -- RF2 and taps against the reference code's channel counts -------------------------------------------------
def test_rf2_forms_on_large_small_and_v2():
    def tail(spec, start):
        return [(b.exp, b.out) for b in spec.blocks[start:]], spec.last_channels

    large, small, v2 = get_spec("mobilenet_v3_large"), get_spec("mobilenet_v3_small"), get_spec("mobilenet_v2")
    # DeepLab's mobilenet_v3_large_seg: [(13, 336), (14, 480), (15, 480), (16, None)], outputs halved
    assert tail(reduce_last_block(large, "deeplab"), 12) == ([(336, 80), (480, 80), (480, 80)], 480)
    assert tail(reduce_last_block(large, "ssdlite"), 12) == ([(672, 80), (480, 80), (480, 80)], 480)
    assert tail(reduce_last_block(small, "deeplab"), 8) == ([(144, 48), (288, 48), (288, 48)], 288)
    assert tail(reduce_last_block(small, "ssdlite"), 8) == ([(288, 48), (288, 48), (288, 48)], 288)
    assert tail(reduce_last_block(v2, "ssdlite"), 13) == ([(576, 80), (480, 80), (480, 80), (480, 160)], 640)
    assert reduce_last_block(large, "deeplab").se_channels(12) == 88  # 336 / 4 = 84, rounded to 8
    assert reduce_last_block(large, "none") is large
    assert reduce_last_block(large, "deeplab").blocks[:12] == large.blocks[:12]


def where(spec, tap):
    t = find_low_tap(spec, tap)
    return t.block, t.kind, t.channels


def test_low_taps_are_deeplabs_and_torchvisions_layers():
    large, small, v2 = get_spec("mobilenet_v3_large"), get_spec("mobilenet_v3_small"), get_spec("mobilenet_v2")
    # DeepLab's decoder end points at stride 8: layer_7 (Large, V2) and layer_4 (Small) depthwise outputs
    assert where(large, "stride8_depthwise") == (6, "depthwise", 120)
    assert where(small, "stride8_depthwise") == (3, "depthwise", 88)
    assert where(v2, "stride8_depthwise") == (6, "depthwise", 192)
    # torchvision: stage_indices[-4], the strided block that starts stride 8
    assert where(large, "stride8_first_output") == (4, "output", 40)
    assert where(small, "stride8_first_output") == (2, "output", 24)
    assert where(small, "stride8_output") == (3, "output", 24)
    assert find_low_tap(large, "none") is None


def test_the_backbone_keeps_no_classifier_and_v2_stops_at_its_last_bottleneck():
    model = lraspp_mobilenet_v3_large()
    names = [n for n, _ in model.named_parameters()]
    assert names and not [n for n in names if n.startswith(("backbone.classifier", "backbone.conv_head"))]
    assert model.backbone_spec.features_channels == 480 and model.backbone_spec.head_channels == 0
    v2 = raspp_mobilenet_v2()
    assert v2.backbone_spec.last_channels == 0 and v2.backbone_spec.features_channels == 320
    dilations = [b.dilation for b in model.backbone_spec.blocks]
    assert dilations[12:] == [1, 2, 2] and model.backbone_spec.blocks[12].stride == 1  # TF-style atrous


# -- costs -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [
    ("lraspp_mobilenet_v3_large", {}),
    ("lraspp_mobilenet_v3_small", {"output_stride": 32, "low_tap": "stride8_first_output", "gate": "hard_sigmoid"}),
    ("lraspp_mobilenet_v3_small", {"low_tap": "none", "pooling": "kernel", "pool_kernel": (2, 3),
                                   "pool_stride": (1, 2)}),
    ("lraspp_mobilenet_v2", {"width_mult": 0.35}),
    ("raspp_mobilenet_v3_large", {"rf2": "ssdlite", "filters": 64}),
    ("raspp_mobilenet_v2", {"pooling": "kernel", "pool_kernel": (3, 3), "pool_stride": (2, 2)}),
])
def test_analytic_costs_equal_the_hook_counters(name, options):
    spec = get_seg_spec(name, **options)
    model = SegmentationModel(spec)
    for size in ((67, 93), (64, 128)):
        cost = seg_cost(spec, size)
        assert cost.params == count_params(model)
        assert cost.madds == count_madds(model, (1, 3, *size))


def test_head_size_difference_of_table7_rows_7_and_8_by_hand():
    """F = 256 -> 128 on 480 channels: the 1x1 conv (+ BN), the gate conv (+ bias) and the class conv."""
    r7 = seg_cost(get_seg_spec("lraspp_mobilenet_v3_large", filters=256), (1025, 2049))
    r8 = seg_cost(get_seg_spec("lraspp_mobilenet_v3_large", filters=128), (1025, 2049))
    assert r7.params - r8.params == 480 * 128 + 2 * 128 + 480 * 128 + 128 + 128 * 19
    # features 65x129 at stride 16, one pooled position, the class conv at stride 8 (129x257)
    assert r7.madds - r8.madds == 480 * 128 * 65 * 129 + 480 * 128 + 128 * 19 * 129 * 257


# Ours at DeepLab's evaluation crop (1025x2049, 513x1025) beside the paper's printed figures.
OURS_AND_PAPER = {
    ("table7", 1, "params"): (2_113_043, 2.11e6), ("table7", 1, "madds"): (21_233_054_912, 21.29e9),
    ("table7", 2, "params"): (1_159_123, 1.15e6), ("table7", 2, "madds"): (13_632_849_952, 13.68e9),
    ("table7", 3, "params"): (1_030_950, 1.02e6), ("table7", 3, "madds"): (12_775_224_928, 12.83e9),
    ("table7", 4, "params"): (987_174, 0.98e6), ("table7", 4, "madds"): (12_522_851_552, 12.57e9),
    ("table7", 5, "params"): (3_600_963, 3.60e6), ("table7", 5, "madds"): (18_155_973_384, 18.43e9),
    ("table7", 6, "params"): (1_762_435, 1.76e6), ("table7", 6, "madds"): (11_031_499_128, 11.24e9),
    ("table7", 7, "params"): (1_632_894, 1.63e6), ("table7", 7, "madds"): (10_128_520_800, 10.33e9),
    ("table7", 8, "params"): (1_507_198, 1.51e6), ("table7", 8, "madds"): (9_532_656_864, 9.74e9),
    ("table7", 9, "params"): (282_598, 0.28e6), ("table7", 9, "madds"): (3_958_216_864, 4.00e9),
    ("table7", 10, "params"): (168_502, 0.16e6), ("table7", 10, "madds"): (2_496_715_600, 2.54e9),
    ("table7", 11, "params"): (468_830, 0.47e6), ("table7", 11, "madds"): (2_779_749_184, 2.90e9),
    ("table8", ("V3", 16), "madds_full"): (9_532_656_864, 9.74e9),
    ("table8", ("V3", 16), "madds_half"): (2_425_355_232, 2.48e9),
    ("table8", ("V3", 32), "madds_full"): (7_581_284_064, 7.74e9),
    ("table8", ("V3", 32), "madds_half"): (1_930_006_752, 1.98e9),
    ("table8", ("V3-Small", 16), "madds_full"): (2_779_749_184, 2.90e9),
    ("table8", ("V3-Small", 16), "madds_half"): (707_890_240, 0.74e9),
    ("table8", ("V3-Small", 32), "madds_full"): (1_962_958_144, 2.06e9),
    ("table8", ("V3-Small", 32), "madds_half"): (500_550_976, 0.53e9),
}


def test_tables_7_and_8_within_3_percent_or_explained():
    entries = {(e["table"], e["row"], e["quantity"]): e for e in paper_comparison()}
    assert set(entries) == set(OURS_AND_PAPER)
    for key, (ours, paper) in OURS_AND_PAPER.items():
        e = entries[key]
        assert e["ours"] == ours and e["paper"] == pytest.approx(paper), key
        relative = ours / paper - 1
        if key in EXPLAINED:  # outside the tolerance, and by no more than the explanation covers
            assert TOLERANCE < abs(relative) < 0.06 and e["explanation"], (key, relative)
        else:
            assert abs(relative) <= TOLERANCE and e["within_tolerance"], (key, relative)
        # at the nominal 1024x2048 / 512x1024 our counts are lower, never higher
        assert e["nominal"] <= e["ours"]


# -- SegSpec ---------------------------------------------------------------------------------------------------
def test_segspec_json_round_trip_and_file(tmp_path):
    spec = get_seg_spec("lraspp_mobilenet_v2", width_mult=0.5, gate="hard_sigmoid", **FIGURE10_POOLING)
    again = SegSpec.from_json(spec.to_json())
    assert again == spec and again.pool_kernel == (49, 49) and again.backbone == spec.backbone
    path = tmp_path / "seg.json"
    spec.save(path)
    assert SegSpec.load(path) == spec
    model = build_segmentation(str(path), num_classes=7)
    assert model.spec == spec.replace(num_classes=7)
    assert json.loads(spec.to_json())["backbone"]["name"] == "mobilenet_v2_050"


def test_segspec_defaults_by_head_and_rf2_as_bool():
    backbone = get_spec("mobilenet_v3_small")
    lr, r = SegSpec("a", backbone, rf2=True), SegSpec("b", backbone, head="raspp", rf2=False)
    assert (lr.rf2, lr.low_tap, lr.gate) == ("deeplab", "stride8_depthwise", "sigmoid")
    assert (r.rf2, r.low_tap, r.gate) == ("none", "none", "none")
    assert seg_spec(backbone).name == "lraspp_mobilenet_v3_small"


@pytest.mark.parametrize("changes, message", [
    ({"head": "fcn"}, r"unknown head 'fcn' \(choose from lraspp, raspp\)"),
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"filters": 12.5}, "filters must be a positive integer, got 12.5"),
    ({"output_stride": 4}, "output_stride must be one of 8, 16, 32, got 4"),
    ({"rf2": "half"}, r"unknown rf2 'half' \(choose from none, deeplab, ssdlite\)"),
    ({"low_tap": "stride4"}, "unknown low_tap 'stride4'"),
    ({"gate": "none"}, "LR-ASPP needs a gate"),
    ({"head": "raspp", "low_tap": "stride8_output"}, "R-ASPP .* has no low-level skip; low_tap must be 'none'"),
    ({"head": "raspp", "low_tap": "none", "gate": "sigmoid"}, "R-ASPP has no gate"),
    ({"pooling": "kernel"}, r"pool_kernel must be two positive integers \(height, width\), got None"),
    ({"pooling": "kernel", "pool_kernel": (49, 0), "pool_stride": (16, 20)}, r"pool_kernel .* got \(49, 0\)"),
    ({"pooling": "kernel", "pool_kernel": (49, 49), "pool_stride": (16,)}, r"pool_stride .* got \(16,\)"),
    ({"pool_kernel": (3, 3)}, "pool_kernel and pool_stride apply to pooling='kernel' only"),
    ({"pooling": "max"}, "unknown pooling 'max'"),
    ({"name": ""}, "name must be a non-empty string"),
])
def test_bad_fields_are_refused_by_name(changes, message):
    base = get_seg_spec("lraspp_mobilenet_v3_small")
    with pytest.raises(SegSpecError, match=message):
        base.replace(**changes)


def test_backbones_that_cannot_serve_are_refused():
    from mobilenetv3 import ArchSpec, BlockSpec, SpecError

    flat = ArchSpec(name="flat", blocks=(BlockSpec(3, 16, 16),), last_channels=0, head_channels=0)
    with pytest.raises(SegSpecError, match=r"output_stride 16 is larger than the backbone 'flat''s own \(2\)"):
        SegSpec("x", flat)
    shallow = ArchSpec(name="shallow", blocks=(BlockSpec(3, 16, 16, stride=2),), last_channels=0, head_channels=0)
    with pytest.raises(SpecError, match="low_tap 'stride8_depthwise': backbone 'shallow' has no block at output "
                                        "stride 8"):
        find_low_tap(shallow, "stride8_depthwise")  # stride 4 at most; SegSpec refuses it for its output stride
    deeper = shallow.replace(blocks=shallow.blocks * 3)  # strides 4, 8, 16
    assert SegSpec("x", deeper).low_tap_info().block == 2


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('{"format": 2, "name": "x", "backbone": {}}', "format 2 is not supported"),
    ('{"name": "x"}', "missing the required field 'backbone'"),
    ('{"name": "x", "backbone": {"name": "b", "blocks": []}, "colour": 1}', "unknown segmentation spec field"),
    ('{"name": "x", "backbone": {"name": "b", "blocks": [{"kernel": 3}]}}', "backbone: block 1: missing field"),
])
def test_bad_json_is_refused_by_name(text, message):
    with pytest.raises(SegSpecError, match=message):
        SegSpec.from_json(text)


# -- registry ----------------------------------------------------------------------------------------------------
def test_registry_names_and_unknown_names():
    assert set(SEG_MODELS) == {"lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small", "lraspp_mobilenet_v2",
                               "raspp_mobilenet_v3_large", "raspp_mobilenet_v3_small", "raspp_mobilenet_v2"}
    assert get_seg_spec("lraspp_mobilenet_v2", 0.35).name == "lraspp_mobilenet_v2_035"
    with pytest.raises(KeyError, match="Did you mean lraspp_mobilenet_v3_large"):
        get_seg_spec("lraspp_mobilenet_v3_larg")


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    for name in ("lraspp_mobilenet_v3_small", "raspp_mobilenet_v3_small"):
        model = build_segmentation(name, num_classes=3).train()
        out = model(torch.randn(2, 3, 48, 64))
        F.cross_entropy(out, torch.randint(0, 3, (2, 48, 64))).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, (name, missing)


# -- export ------------------------------------------------------------------------------------------------------
def test_onnx_export_of_the_global_pool_model_agrees_with_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    from mobilenetv3.deploy.onnx_export import export_onnx

    model = randomise(lraspp_mobilenet_v3_small())
    report = export_onnx(model, tmp_path / "seg.onnx", input_shape=(1, 3, 64, 96), dynamic_resolution=True,
                         check_resolutions=(80, 67))
    assert [c["input_shape"] for c in report.checks] == [[1, 3, 64, 96], [1, 3, 80, 80], [1, 3, 67, 67]]
    assert report.max_abs_diff < 1e-4 and report.folded
    assert "Resize" in report.ops and "BatchNormalization" not in report.ops
