"""COCO metrics through pycocotools on tiny hand-made sets whose mAP is known."""

import json

import pytest
import torch

from mobilenetv3.tasks.det_metrics import METRICS, CocoAccumulator, coco_evaluate, write_results

pytest.importorskip("pycocotools")
torch.set_num_threads(1)

BOXES = torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 20.0, 180.0, 90.0]])  # areas 2500, 5600: both medium


def truth(acc, crowd=None):
    acc.add_truth(1, (200, 200), BOXES, torch.tensor([1, 2]), iscrowd=crowd)


def test_perfect_detections_score_one():
    acc = CocoAccumulator(3)
    truth(acc)
    acc.add_detections(1, BOXES, torch.tensor([0.9, 0.8]), torch.tensor([1, 2]))
    result = acc.evaluate()
    assert set(result) == set(METRICS)
    assert result["map"] == pytest.approx(1.0) and result["ap50"] == pytest.approx(1.0)
    assert result["ap75"] == pytest.approx(1.0) and result["ap_medium"] == pytest.approx(1.0)
    assert result["ap_small"] is None and result["ap_large"] is None  # none that size: COCO's -1


def test_one_of_two_boxes_missed():
    # one class, two boxes, one found exactly: precision 1 up to recall 0.5, so 51 of COCO's 101 recall points
    acc = CocoAccumulator(2)
    acc.add_truth(1, (200, 200), BOXES, torch.tensor([1, 1]))
    acc.add_detections(1, BOXES[:1], torch.tensor([0.9]), torch.tensor([1]))
    assert acc.evaluate()["map"] == pytest.approx(51 / 101)


def test_a_box_too_loose_for_high_thresholds():
    # IoU 0.64 with the truth: a hit at 0.5 .. 0.6 (3 of the 10 thresholds), a miss from 0.65
    acc = CocoAccumulator(2)
    acc.add_truth(1, (200, 200), BOXES[:1], torch.tensor([1]))
    acc.add_detections(1, torch.tensor([[10.0, 10.0, 60.0, 88.0]]), torch.tensor([0.9]), torch.tensor([1]))
    result = acc.evaluate()
    assert 2500 / 3900 == pytest.approx(0.641, abs=1e-3)
    assert result["ap50"] == pytest.approx(1.0) and result["ap75"] == pytest.approx(0.0)
    assert result["map"] == pytest.approx(0.3)


def test_detections_on_a_crowd_are_not_false_positives():
    acc = CocoAccumulator(3)
    truth(acc, crowd=torch.tensor([False, True]))
    acc.add_detections(1, BOXES, torch.tensor([0.9, 0.95]), torch.tensor([1, 2]))
    result = acc.evaluate()
    assert result["map"] == pytest.approx(1.0)  # class 2 has only a crowd: not scored; class 1 perfect


def test_no_detections_and_category_ids_and_result_file(tmp_path):
    acc = CocoAccumulator(3, category_ids=[0, 7, 42])  # labels 1, 2 are COCO categories 7, 42
    truth(acc)
    assert acc.evaluate() == {k: (0.0 if k in ("map", "ap50", "ap75", "ap_medium") else None)
                              for k in METRICS}
    acc.add_detections(1, BOXES[1:], torch.tensor([0.5]), torch.tensor([2]))
    assert [a["category_id"] for a in acc.annotations] == [7, 42] and acc.results[0]["category_id"] == 42
    assert acc.results[0]["bbox"] == [100.0, 20.0, 80.0, 70.0]
    path = write_results(acc.results, tmp_path / "out" / "results.json")
    assert json.loads(path.read_text()) == acc.results
    assert coco_evaluate(acc.ground_truth(), acc.results)["map"] == pytest.approx(0.5)


def test_shares_of_several_processes_merge_into_one_evaluation():
    whole, first, second = CocoAccumulator(3), CocoAccumulator(3), CocoAccumulator(3)
    for acc, image in ((whole, 1), (whole, 2), (first, 1), (second, 2)):
        acc.add_truth(image, (200, 200), BOXES, torch.tensor([1, 2]))
        acc.add_detections(image, BOXES[:1], torch.tensor([0.9]), torch.tensor([1]))
    first.gather()  # not distributed: nothing changes
    merged = CocoAccumulator(3)
    merged.merge([(a.images, a.annotations, a.results) for a in (first, second)])
    assert merged.ground_truth() == whole.ground_truth() and merged.results == whole.results
    assert merged.evaluate() == whole.evaluate()
