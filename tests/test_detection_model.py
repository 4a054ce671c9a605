"""SSDLite networks: the C4/C5 taps and the Y reduction against the reference code's channel counts, output shapes
at two input sizes, post-processing on a hand-made case, exact costs against the hook counters and against Table 6,
DetSpec JSON and its refusals, a few training steps, and ONNX export with NMS inside compared with eager."""

import json

import pytest
import torch
from torch import nn

from mobilenetv3 import get_spec
from mobilenetv3.cost import count_madds, count_params
from mobilenetv3.detection import (
    DET_MODELS,
    AnchorSpec,
    BoxCoder,
    DetSpec,
    DetSpecError,
    LossOptions,
    build_detection,
    build_targets,
    det_cost,
    det_spec,
    detection_loss,
    find_taps,
    get_det_spec,
    nms_keep,
    postprocess,
    reduce_tail,
    xyxy_to_cxcywh,
)
from mobilenetv3.detection.paper import EXPLAINED, TOLERANCE, paper_comparison
from mobilenetv3.segmentation import reduce_last_block

torch.set_num_threads(1)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine terms and conv biases away from their initial values (as in the segmentation
    tests), so that wiring mistakes and near-tied scores cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.rand(m.out_channels, generator=g) * 2 - 1)
    return model.eval()


# -- taps and the Y form -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, c4_block, c4, c5", [
    ("ssdlite_mobilenet_v3_large", 13, 672, 960), ("ssdlite_mobilenet_v3_large_y", 13, 672, 480),
    ("ssdlite_mobilenet_v3_small", 9, 288, 576), ("ssdlite_mobilenet_v3_small_y", 9, 288, 288),
    ("ssdlite_mobilenet_v2", 14, 576, 1280), ("ssdlite_mnasnet_a1", 13, 672, 1280),
])
def test_c4_and_c5_are_the_papers_layers(name, c4_block, c4, c5):
    taps = get_det_spec(name).taps()
    assert (taps.c4_block, taps.c4_channels, taps.c4_stride, taps.c5_channels, taps.c5_stride) == (
        c4_block, c4, 16, c5, 32)


def test_the_y_form_halves_between_c4_and_c5_as_tf_and_torchvision_do():
    large = reduce_tail(get_spec("mobilenet_v3_large"))
    assert [(b.exp, b.out) for b in large.blocks[12:]] == [(672, 80), (480, 80), (480, 80)]
    assert large.last_channels == 480 and large.blocks[:12] == get_spec("mobilenet_v3_large").blocks[:12]
    small = reduce_tail(get_spec("mobilenet_v3_small"))
    assert [(b.exp, b.out) for b in small.blocks[8:]] == [(288, 48), (288, 48), (288, 48)]
    assert small.last_channels == 288
    for family in ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mnasnet_a1"):
        spec = get_spec(family)  # the segmentation room's "ssdlite" RF2 form is the same transform
        assert reduce_tail(spec).blocks == reduce_last_block(spec, "ssdlite").blocks


def test_the_c4_tap_is_the_expansion_of_the_c4_block():
    model = randomise(build_detection("ssdlite_mobilenet_v3_small_y", num_classes=3))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        c4, c5 = model.forward_features(x)[:2]
        feats = model.backbone.features
        y = feats[:9](x)  # stem + blocks 1-8
        torch.testing.assert_close(c4, feats[9].expand(y))
        torch.testing.assert_close(c5, feats(x))


# -- shapes and post-processing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(320, 320), (200, 136)])
@pytest.mark.parametrize("style", ["tf", "torchvision"])
def test_output_shapes_at_two_sizes(size, style):
    model = build_detection("ssdlite_mobilenet_v3_small_y", num_classes=6, anchors=AnchorSpec(style))
    spec, (h, w) = model.spec, size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        levels = model.forward_features(x)
        assert [tuple(f.shape[-2:]) for f in levels] == spec.feature_sizes(h, w)
        cls_logits, box_regression = model.train()(x)
        boxes, scores, labels, num = model.eval()(x)
    a = spec.num_anchors(h, w)
    assert cls_logits.shape == (2, a, 6) and box_regression.shape == (2, a, 4)
    assert boxes.shape == (2, 100, 4) and scores.shape == labels.shape == (2, 100) and num.shape == (2,)
    assert labels.dtype == num.dtype == torch.int64 and ((labels >= 0) & (labels <= 5)).all()
    assert (boxes[..., 0::2] <= w).all() and (boxes[..., 1::2] <= h).all() and (boxes >= 0).all()
    if size == (320, 320):
        assert a == (2034 if style == "tf" else 3234)


def test_postprocess_on_a_hand_made_case():
    spec = det_spec("mobilenet_v3_small", num_classes=3, iou_threshold=0.5, score_threshold=0.3, max_detections=5)
    anchors = xyxy_to_cxcywh(torch.tensor([[0.0, 0, 0.5, 0.5], [0.05, 0, 0.55, 0.5], [0.5, 0.5, 1, 1],
                                           [0, 0.5, 0.5, 1]]))
    logits = torch.full((1, 4, 3), -10.0)  # background 0, classes 1 and 2
    logits[0, 0, 1], logits[0, 1, 1], logits[0, 2, 2], logits[0, 3, 0] = 3.0, 2.0, 1.0, 3.0
    boxes, scores, labels, num = postprocess(logits, torch.zeros(1, 4, 4), anchors, spec, (100, 200))
    assert num.tolist() == [2]  # anchor 1 suppressed by anchor 0 (IoU 0.82), anchor 3 is background
    assert labels[0].tolist() == [1, 2, 0, 0, 0]
    torch.testing.assert_close(boxes[0, :2], torch.tensor([[0.0, 0, 100, 50], [100, 50, 200, 100]]))
    assert scores[0, 0] > scores[0, 1] > 0.3 and (scores[0, 2:] == 0).all() and (boxes[0, 2:] == 0).all()


# -- costs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [
    ("ssdlite_mobilenet_v3_small_y", {}), ("ssdlite_mobilenet_v3_small", {"anchors": AnchorSpec("torchvision")}),
    ("ssdlite_mnasnet_a1", {"classification": "sigmoid", "num_classes": 5}),
])
def test_analytic_costs_equal_the_hook_counters(name, options):
    model = build_detection(name, **options)
    for size in ((320, 320), (160, 224)):
        cost = det_cost(model.spec, size)
        assert cost.params == count_params(model)
        assert cost.madds == count_madds(model, (1, 3, *size))


def test_table6_within_3_percent_or_explained():
    entries = paper_comparison()
    assert len(entries) == 12
    for e in entries:
        key = (e["row"], e["quantity"])
        if key in EXPLAINED:
            assert TOLERANCE < abs(e["relative"]) < 0.05 and e["explanation"], (key, e["relative"])
        else:
            assert abs(e["relative"]) <= 0.015 and e["within_tolerance"], (key, e["relative"])
    ours = {(e["row"], e["quantity"]): e["ours"] for e in entries}
    assert ours[("V3", "params")] == 5_006_735 and ours[("V3^Y", "params")] == 3_248_255
    assert ours[("V3-Small", "madds")] == 210_417_856 and ours[("V2", "params")] == 4_500_543
    # torchvision's anchors on V3^Y give torchvision's own count for ssdlite320_mobilenet_v3_large
    assert det_cost(get_det_spec("ssdlite_mobilenet_v3_large_y", anchors=AnchorSpec("torchvision"))).params == 3_440_060


# -- DetSpec -----------------------------------------------------------------------------------------------------
def test_detspec_json_round_trip_and_file(tmp_path):
    spec = get_det_spec("ssdlite_mobilenet_v2", width_mult=0.5, anchors=AnchorSpec("torchvision", clip=False),
                        classification="sigmoid", num_classes=11)
    again = DetSpec.from_json(spec.to_json())
    assert again == spec and again.anchors.aspect_ratios == (2.0, 3.0) and again.extra_widths == (256, 128, 128, 64)
    path = tmp_path / "det.json"
    spec.save(path)
    assert DetSpec.load(path) == spec
    model = build_detection(str(path), num_classes=7)
    assert model.spec == spec.replace(num_classes=7) and model.cls_head.per_anchor == 6
    assert json.loads(spec.to_json())["backbone"]["name"] == "mobilenet_v2_050"


@pytest.mark.parametrize("changes, message", [
    ({"num_classes": 1}, "num_classes"), ({"extra_widths": (512, 0)}, "extra_widths"),
    ({"extra_act": "gelu"}, "extra_act"), ({"head_kernel": 2}, "head_kernel"),
    ({"classification": "softmax2"}, "classification"), ({"box_weights": (10, 10, 5)}, "box_weights"),
    ({"score_threshold": 1.5}, "score_threshold"), ({"iou_threshold": -0.1}, "iou_threshold"),
    ({"max_detections": 0}, "max_detections"), ({"reduce_tail": 1}, "reduce_tail"),
    ({"anchors": {"style": "yolo"}}, "unknown style"), ({"anchors": {"scale": 2}}, "unknown field"),
])
def test_bad_fields_are_refused_by_name(changes, message):
    with pytest.raises(DetSpecError, match=message):
        get_det_spec("ssdlite_mobilenet_v3_small").replace(**changes)


def test_backbones_that_cannot_serve_and_bad_json_are_refused():
    from mobilenetv3.spec import with_output_stride

    with pytest.raises(DetSpecError, match="atrous"):
        det_spec(with_output_stride(get_spec("mobilenet_v3_small"), 16))
    with pytest.raises(DetSpecError, match="not valid JSON"):
        DetSpec.from_json("{")
    with pytest.raises(DetSpecError, match="unknown detection spec field"):
        DetSpec.from_dict({"name": "x", "backbone": get_spec("mobilenet_v3_small").to_dict(), "heads": 2})
    with pytest.raises(DetSpecError, match="backbone: "):
        DetSpec.from_dict({"name": "x", "backbone": {"name": "b"}})
    with pytest.raises(KeyError, match="Did you mean"):
        get_det_spec("ssdlite_mobilenet_v3_larg")
    assert sorted(DET_MODELS) == sorted(["ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_large_y",
                                         "ssdlite_mobilenet_v3_small", "ssdlite_mobilenet_v3_small_y",
                                         "ssdlite_mobilenet_v2", "ssdlite_mnasnet_a1"])
    assert find_taps(get_spec("mobilenet_v2")).c4_block == 14


# -- training and export -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("classification", ["softmax", "sigmoid"])
def test_a_few_steps_on_one_image_lower_the_loss(classification):
    torch.manual_seed(0)
    model = build_detection("ssdlite_mobilenet_v3_small_y", num_classes=3, classification=classification).train()
    x = torch.randn(2, 3, 96, 96)
    gt = [torch.tensor([[0.1, 0.1, 0.6, 0.5]]), torch.tensor([[0.3, 0.4, 0.9, 0.9], [0.0, 0.5, 0.3, 0.8]])]
    gl = [torch.tensor([1]), torch.tensor([2, 1])]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        cls_logits, box_regression, anchors = model.forward_raw(x)
        labels, targets = build_targets(gt, gl, anchors, BoxCoder(model.spec.box_weights), LossOptions())
        out = detection_loss(cls_logits, box_regression, labels, targets, classification)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_onnx_nms_equals_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Keep(nn.Module):
        def forward(self, boxes, scores):
            return nms_keep(boxes, scores, 0.45, 0.2, 7)

    g = torch.Generator().manual_seed(1)
    xy = torch.rand(6, 50, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + torch.rand(6, 50, 2, generator=g) * 30 + 1], -1)
    scores = torch.rand(6, 50, generator=g).sort(1, descending=True).values
    path = str(tmp_path / "nms.onnx")
    torch.onnx.export(Keep(), (boxes, scores), path, dynamo=False, opset_version=17,
                      input_names=["boxes", "scores"], dynamic_axes={"boxes": {0: "g"}, "scores": {0: "g"}})
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for b, s in ((boxes, scores), (boxes[:2] * 2, scores[:2])):
        (got,) = session.run(None, {"boxes": b.numpy(), "scores": s.numpy()})
        assert (torch.from_numpy(got) == nms_keep(b, s, 0.45, 0.2, 7)).all()


def test_onnx_export_of_the_whole_model_agrees_with_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = randomise(build_detection("ssdlite_mobilenet_v3_small_y", num_classes=5, score_threshold=0.05))
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    path = str(tmp_path / "det.onnx")
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["image"],
                      output_names=["boxes", "scores", "labels", "num_detections"])
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        boxes, scores, labels, num = model(x)
    assert num.tolist() == got[3].tolist() and num.min() > 0
    assert (labels.numpy() == got[2]).all()
    torch.testing.assert_close(torch.from_numpy(got[0]), boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.from_numpy(got[1]), scores, atol=1e-4, rtol=0)
