"""SSDLite's box machinery on hand-made cases: anchors against positions computed by hand in both styles, the box
coder's values and round trip, matching (threshold, forced best anchors, ignore band, empty boxes), the losses
(hard negative mining picks the right negatives, focal loss by hand) and NMS against a brute-force greedy loop."""

import math

import pytest
import torch

from mobilenetv3.detection import (
    AnchorSpec,
    BoxCoder,
    LossOptions,
    box_iou,
    build_targets,
    cxcywh_to_xyxy,
    detection_loss,
    hard_negatives,
    make_anchors,
    match_anchors,
    nms_keep,
    xyxy_to_cxcywh,
)
from mobilenetv3.spec import SpecError

torch.set_num_threads(1)
R2, R3 = math.sqrt(2), math.sqrt(3)


# -- anchors ---------------------------------------------------------------------------------------------------
def test_tf_anchors_by_hand():
    a = make_anchors(AnchorSpec("tf"), [(2, 2), (1, 1)])  # two levels: scales 0.2, 0.95 (then 1.0)
    assert a.shape == (2 * 2 * 3 + 6, 4)
    lowest = [(0.1, 0.1), (0.2 * R2, 0.2 / R2), (0.2 / R2, 0.2 * R2)]  # (0.1, 1), (s0, 2), (s0, 0.5)
    expected = [(x, y, w, h) for y in (0.25, 0.75) for x in (0.25, 0.75) for w, h in lowest]
    s, r = 0.95, math.sqrt(0.3333)
    expected += [(0.5, 0.5, w, h) for w, h in [(s, s), (s * R2, s / R2), (s / R2, s * R2), (s * R3, s / R3),
                                               (s * r, s / r), (math.sqrt(s), math.sqrt(s))]]
    torch.testing.assert_close(a, torch.tensor(expected), rtol=0, atol=1e-6)


def test_torchvision_anchors_by_hand_and_clipped():
    a = make_anchors(AnchorSpec("torchvision", aspect_ratios=(2.0,)), [(1, 2), (1, 1)])
    sizes0 = [(0.2, 0.2), (math.sqrt(0.2 * 0.95),) * 2, (0.2 * R2, 0.2 / R2), (0.2 / R2, 0.2 * R2)]
    expected = [(x, 0.5, w, h) for x in (0.25, 0.75) for w, h in sizes0]
    s = 0.95
    expected += [(0.5, 0.5, w, h) for w, h in [(s, s), (math.sqrt(s),) * 2, (1.0, s / R2), (s / R2, 1.0)]]
    torch.testing.assert_close(a, torch.tensor(expected), rtol=0, atol=1e-6)


def test_anchor_counts_per_level_and_scales():
    assert AnchorSpec("tf").anchors_per_level(6) == [3, 6, 6, 6, 6, 6]
    assert AnchorSpec("torchvision").anchors_per_level(6) == [6] * 6
    assert AnchorSpec("tf", reduce_lowest=False).anchors_per_level(3) == [6, 6, 6]
    assert AnchorSpec("tf", interpolated=False).anchors_per_level(3) == [3, 5, 5]
    assert AnchorSpec("tf").scales(6) == pytest.approx([0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])


@pytest.mark.parametrize("changes, message", [
    ({"style": "yolo"}, "unknown style"), ({"min_scale": 0}, "min_scale"), ({"min_scale": 0.9, "max_scale": 0.5},
                                                                          "above max_scale"),
    ({"aspect_ratios": ()}, "aspect_ratios"), ({"aspect_ratios": (1.0, -2.0)}, "aspect ratio"),
    ({"style": "torchvision", "reduce_lowest": True}, "reduce_lowest"), ({"clip": "yes"}, "clip"),
])
def test_bad_anchor_specs_are_refused_by_name(changes, message):
    with pytest.raises(SpecError, match=message):
        AnchorSpec(**changes)


# -- boxes and the coder -----------------------------------------------------------------------------------------
def test_iou_by_hand_and_empty_boxes():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 5]])
    b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[50 / 150, 1.0], [0.0, 0.0]]))


def test_coder_values_by_hand():
    coder = BoxCoder()
    anchor = torch.tensor([0.5, 0.5, 0.2, 0.2])
    codes = coder.encode(torch.tensor([[0.45, 0.4, 0.65, 0.6], [0.3, 0.4, 0.7, 0.5]]), anchor)
    expected = [[10 * 0.05 / 0.2, 0, 0, 0], [0, 10 * -0.05 / 0.2, 5 * math.log(2), 5 * math.log(0.5)]]
    torch.testing.assert_close(codes, torch.tensor(expected), atol=1e-5, rtol=0)


def test_coder_round_trip():
    g = torch.Generator().manual_seed(0)
    # size ratios from 1/55 to 20: inside the decoder's clamp (1000 / 16)
    anchors = torch.cat([torch.rand(500, 2, generator=g), torch.rand(500, 2, generator=g) * 0.5 + 0.05], 1)
    boxes = cxcywh_to_xyxy(torch.cat([torch.rand(500, 2, generator=g), torch.rand(500, 2, generator=g) + 0.01], 1))
    for weights in ((10, 10, 5, 5), (1, 1, 1, 1)):
        coder = BoxCoder(weights)
        torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(anchors)), anchors)
    huge = BoxCoder().decode(torch.tensor([0.0, 0, 1e4, 1e4]), torch.tensor([0.5, 0.5, 0.1, 0.1]))
    assert torch.isfinite(huge).all()  # clamped before the exponential


# -- matching ----------------------------------------------------------------------------------------------------
ANCHORS_XYXY = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [100, 100, 110, 110]])
ANCHORS = xyxy_to_cxcywh(ANCHORS_XYXY)


def test_matching_by_threshold_and_forced_best_anchor():
    gt = torch.tensor([[0.0, 0, 10, 10],  # A0 exactly; A1 at 1/3
                       [21, 21, 31, 31],  # A2 at 81/119 = 0.68
                       [6, 0, 16, 8],  # A1 at 72/108 = 0.67 (A0: 0.22)
                       [100, 100, 104, 104],  # A3 at 0.16 only: forced
                       [3, 3, 3, 8]])  # no area: matches nothing
    assert match_anchors(gt, ANCHORS).tolist() == [0, 2, 1, 3]
    assert match_anchors(gt[:3], ANCHORS).tolist() == [0, 2, 1, -1]
    assert match_anchors(torch.zeros(0, 4), ANCHORS).tolist() == [-1, -1, -1, -1]


def test_a_shared_best_anchor_goes_to_the_later_box_and_the_ignore_band():
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9]])  # both best on A0; by IoU A0 -> box 0, forcing: box 1
    assert match_anchors(gt, ANCHORS).tolist() == [1, -1, -1, -1]
    # A1's best IoU is 1/3 (with box 0): between 0.3 and 0.5 it is ignored (-2)
    assert match_anchors(gt[:1], ANCHORS, 0.5, 0.3).tolist() == [0, -2, -1, -1]


def test_targets_carry_labels_and_encoded_boxes():
    gt = torch.tensor([[0.0, 0, 10, 10], [21, 21, 31, 31]])
    labels, targets = build_targets([gt, torch.zeros(0, 4)], [torch.tensor([3, 7]), torch.zeros(0)], ANCHORS,
                                    BoxCoder())
    assert labels.tolist() == [[3, 0, 7, 0], [0, 0, 0, 0]]
    torch.testing.assert_close(targets[0, 2], BoxCoder().encode(gt[1], ANCHORS[2]))
    assert (targets[0, [0, 1, 3]] == 0).all() and (targets[1] == 0).all()


# -- losses --------------------------------------------------------------------------------------------------------
def ce(logits, label):
    return torch.logsumexp(logits, 0) - logits[label]


def test_hard_negative_mining_picks_the_hardest_background_anchors():
    # one positive (anchor 0), five background anchors, one ignored with the largest loss of all
    labels = torch.tensor([[2, 0, 0, 0, 0, 0, -1]])
    logits = torch.zeros(1, 7, 3)
    logits[0, :, 1] = torch.tensor([0.0, 0.5, 3.0, -1.0, 2.0, 1.0, 9.0])  # class 1 logit: a background's loss
    regression = torch.zeros(1, 7, 4)
    regression[0, 0] = torch.tensor([0.5, -2.0, 0.0, 1.0])
    out = detection_loss(logits, regression, labels, torch.zeros(1, 7, 4))
    # 3 x 1 negatives: anchors 2, 4, 5 (class-1 logits 3, 2, 1); not 1 or 3, and never the ignored anchor 6
    mask = hard_negatives(torch.stack([ce(logits[0, i], 0) for i in range(7)])[None], labels, 3.0)
    assert mask.tolist() == [[False, False, True, False, True, True, False]]
    expected = ce(logits[0, 0], 2) + sum(ce(logits[0, i], 0) for i in (2, 4, 5))
    torch.testing.assert_close(out["classification"], expected)
    torch.testing.assert_close(out["box"], torch.tensor(0.125 + 1.5 + 0.0 + 0.5))  # smooth L1, beta 1
    assert out["num_positive"] == 1
    torch.testing.assert_close(out["loss"], out["classification"] + out["box"])


def test_images_without_boxes_and_min_negatives():
    labels = torch.zeros(2, 5, dtype=torch.long)
    labels[0, 0] = 1
    loss = torch.tensor([[0.0, 1, 2, 3, 4], [5.0, 1, 9, 3, 2]])
    assert hard_negatives(loss, labels, 3.0).sum(1).tolist() == [3, 0]
    mask = hard_negatives(loss, labels, 3.0, min_negatives=2)
    assert mask[1].tolist() == [True, False, True, False, False] and mask[0].sum() == 3
    out = detection_loss(torch.zeros(2, 5, 2), torch.zeros(2, 5, 4), torch.zeros(2, 5, dtype=torch.long),
                         torch.zeros(2, 5, 4))
    assert out["loss"] == 0 and out["num_positive"] == 0


def test_sigmoid_focal_loss_by_hand():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0], [9.0, 9.0]]])  # 2 foreground classes, no background slot
    labels = torch.tensor([[2, 0, -1]])  # anchor 0 is class 2, anchor 1 background, anchor 2 ignored
    out = detection_loss(logits, torch.zeros(1, 3, 4), labels, torch.zeros(1, 3, 4), "sigmoid",
                         LossOptions(focal_alpha=0.25, focal_gamma=2.0))

    def focal(x, t):
        p = 1 / (1 + math.exp(-x))
        pt = p if t else 1 - p
        return (0.25 if t else 0.75) * (1 - pt) ** 2 * -math.log(pt)

    expected = focal(2.0, 0) + focal(-1.0, 1) + focal(0.5, 0) + focal(0.0, 0)
    assert out["classification"].item() == pytest.approx(expected, rel=1e-5)


# -- NMS -----------------------------------------------------------------------------------------------------------
def greedy_reference(boxes, scores, iou_threshold, score_threshold, max_keep):
    """The textbook loop: best first, keep unless a kept box overlaps it too much."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if scores[i] <= score_threshold or len(kept) == max_keep:
            continue
        if all(box_iou(boxes[i][None], boxes[j][None]).item() <= iou_threshold for j in kept):
            kept.append(i)
    return sorted(kept)


@pytest.mark.parametrize("seed", range(4))
def test_nms_equals_a_brute_force_greedy_loop(seed):
    g = torch.Generator().manual_seed(seed)
    groups, k = 5, 60
    xy = torch.rand(groups, k, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + torch.rand(groups, k, 2, generator=g) * 30 + 1], -1)  # crowded: long chains
    scores = torch.rand(groups, k, generator=g).sort(1, descending=True).values
    for iou_t, score_t, max_keep in ((0.5, 0.0, 100), (0.3, 0.4, 100), (0.6, 0.1, 4)):
        keep = nms_keep(boxes, scores, iou_t, score_t, max_keep)
        for i in range(groups):
            expected = greedy_reference(boxes[i], scores[i].tolist(), iou_t, score_t, max_keep)
            assert keep[i].nonzero().flatten().tolist() == expected, (seed, i, iou_t)


def test_nms_refuses_bad_shapes():
    with pytest.raises(ValueError, match="nms_keep needs"):
        nms_keep(torch.zeros(3, 4), torch.zeros(3), 0.5, 0.0, 10)
