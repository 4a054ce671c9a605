"""The segmentation metrics against confusion matrices worked out by hand."""

import math

import pytest
import torch

from mobilenetv3.tasks.seg_metrics import ConfusionMatrix, class_iou, mean_iou


def test_a_small_prediction_counted_by_hand():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 2, 2, 255]])
    predicted = torch.tensor([[0, 1, 1, 1],
                              [0, 2, 0, 2]])   # the last pixel is ignored whatever is predicted there
    cm = ConfusionMatrix(3)
    cm.update(predicted, target)
    # rows true, columns predicted: class 0 has pixels (0,0) (0,1) (1,0) -> predicted 0, 1, 0;
    # class 1: (0,2) (0,3) -> 1, 1; class 2: (1,1) (1,2) -> 2, 0.
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU = TP / (row + column - TP): class 0: 2 / (3 + 3 - 2); class 1: 2 / (2 + 3 - 2); class 2: 1 / (2 + 1 - 1)
    expected = [100 * 2 / 4, 100 * 2 / 3, 100 * 1 / 2]
    assert cm.iou() == pytest.approx(expected)
    assert cm.miou() == pytest.approx(sum(expected) / 3)
    assert cm.pixel_accuracy() == pytest.approx(100 * 5 / 7)
    assert cm.count() == 7


def test_batches_accumulate_and_a_class_never_seen_is_left_out_of_the_mean():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    cm.update(torch.tensor([[1, 1]]), torch.tensor([[0, 1]]))
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    ious = cm.iou()
    assert ious[:2] == pytest.approx([50.0, 100 * 2 / 3]) and ious[2:] == [None, None]
    assert cm.miou() == pytest.approx((50.0 + 200 / 3) / 2)
    # a class predicted but absent from the truth has IoU 0, and counts
    assert class_iou(torch.tensor([[1, 1], [0, 0]])) == [50.0, 0.0]
    assert math.isnan(mean_iou([None, None]))


def test_summing_matrices_over_processes_gives_the_metrics_of_all_the_pixels():
    target = torch.randint(0, 3, (4, 6, 6), generator=torch.Generator().manual_seed(0))
    predicted = torch.randint(0, 3, (4, 6, 6), generator=torch.Generator().manual_seed(1))
    whole = ConfusionMatrix(3)
    whole.update(predicted, target)
    ranks = [ConfusionMatrix(3) for _ in range(2)]
    ranks[0].update(predicted[:2], target[:2])
    ranks[1].update(predicted[2:], target[2:])
    total = ranks[0].matrix + ranks[1].matrix

    def all_reduce(t):  # what torch.distributed.all_reduce(SUM) does to rank 0's tensor
        t.copy_(total)

    ranks[0].reduce(all_reduce)
    assert torch.equal(ranks[0].matrix, whole.matrix) and ranks[0].miou() == whole.miou()


def test_labels_outside_the_classes_are_refused():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"label\(s\) \[3, 7\] outside 0..2"):
        cm.update(torch.tensor([0, 0, 0]), torch.tensor([3, 7, 255]))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 3))
