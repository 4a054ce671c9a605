"""Costs against independent truths: NOTES.md's reference figures, hand-computed blocks, and the hook counter."""

import pytest
import torch

from mobilenetv3 import build, count_madds, count_params, get_spec, list_models, spec_cost
from mobilenetv3.spec import ArchSpec, BlockSpec

# (family, width): (parameters, multiply-adds in millions to 0.1M) from the issue and NOTES.md
REFERENCE = {
    ("mobilenet_v3_large", 1.0): (5_483_032, 216.6),
    ("mobilenet_v3_large", 0.75): (3_993_528, 154.6),
    ("mobilenet_v3_small", 1.0): (2_542_856, 56.5),
    ("mobilenet_v3_small", 0.75): (2_041_872, 43.4),
    ("mobilenet_v3_large_minimal", 1.0): (3_924_288, 209.1),
    ("mobilenet_v3_small_minimal", 1.0): (2_044_736, 52.3),
}


@pytest.mark.parametrize("key", list(REFERENCE))
def test_reference_counts(key):
    params, madds_m = REFERENCE[key]
    cost = spec_cost(get_spec(*key))
    assert cost.params == params
    assert round(cost.madds / 1e6, 1) == madds_m


def test_small_paper_head_matches_notes():
    # NOTES.md: Table 2 as printed (1280 head) gives about 2.95M parameters and about 56.9M multiply-adds.
    cost = spec_cost(get_spec("mobilenet_v3_small_paper_head"))
    assert round(cost.params / 1e6, 2) == 2.95
    assert round(cost.madds / 1e6, 1) == 56.9


def test_baselines_close_to_table3():
    v2 = spec_cost(get_spec("mobilenet_v2"))
    assert v2.params == 3_504_872  # the MobileNetV2 paper's 3.4M (3.5M with the 1000-way classifier)
    assert abs(v2.madds / 1e6 - 300) < 1.5
    v2_035 = spec_cost(get_spec("mobilenet_v2", 0.35))
    assert abs(v2_035.params / 1e6 - 1.66) < 0.02 and abs(v2_035.madds / 1e6 - 59.2) < 0.5
    mnas = spec_cost(get_spec("mnasnet_a1"))
    assert abs(mnas.params / 1e6 - 3.9) < 0.05  # MnasNet paper: 3.9M params, 312M MAdds
    assert abs(mnas.madds / 1e6 - 312) < 2


def _one_block_spec(block: BlockSpec, stem: int, se_gate: str = "hard_sigmoid") -> ArchSpec:
    return ArchSpec(name="one", blocks=(block,), stem_channels=stem, last_channels=0, head_channels=0,
                    num_classes=10, resolution=32, se_gate=se_gate)


def test_hand_computed_block_without_se():
    # stem 3->16, 3x3 s2 on 32x32 -> 16x16; block 16 -> exp 64 -> 24, 3x3 s2 -> 8x8; classifier 24 -> 10
    spec = _one_block_spec(BlockSpec(kernel=3, exp=64, out=24, stride=2), stem=16)
    rows = {r.name: r for r in spec_cost(spec).layers}
    assert rows["stem"].params == 3 * 16 * 9 + 2 * 16 and rows["stem"].madds == 16 * 16 * 16 * 3 * 9
    assert rows["block1.expand"].params == 16 * 64 + 2 * 64
    assert rows["block1.expand"].madds == 16 * 16 * 16 * 64
    assert rows["block1.dw"].params == 64 * 9 + 2 * 64 and rows["block1.dw"].madds == 8 * 8 * 64 * 9
    assert rows["block1.project"].params == 64 * 24 + 2 * 24
    assert rows["block1.project"].madds == 8 * 8 * 64 * 24
    assert rows["classifier"].params == 24 * 10 + 10 and rows["classifier"].madds == 240


def test_hand_computed_squeeze_excite():
    # exp 72: squeeze = 72/4 = 18 -> nearest multiple of 8 is 16, which is below 90% of 18, so 24.
    spec = _one_block_spec(BlockSpec(kernel=5, exp=72, out=40, se=True, stride=2), stem=24)
    assert spec.se_channels(0) == 24
    se = next(r for r in spec_cost(spec).layers if r.name == "block1.se")
    assert se.params == 72 * 24 + 24 + 24 * 72 + 72
    assert se.madds == 2 * 72 * 24


@pytest.mark.parametrize("family,width", list_models())
def test_analytic_equals_hooks(family, width):
    spec = get_spec(family, width)
    model = build(spec)
    assert count_params(model) == spec_cost(spec).params
    for res in (224, 161):
        assert count_madds(model, (1, 3, res, res)) == spec_cost(spec, res).madds


def test_madds_scale_with_resolution():
    spec = get_spec("mobilenet_v3_large")
    # convolutions scale with area; SE, the head and the classifier act on pooled 1x1 maps and do not.
    fixed = sum(r.madds for r in spec_cost(spec).layers if r.kind in ("se", "linear") or r.name == "conv_head")
    # 448 and 224 both divide by 32, so every feature map is exactly twice as wide
    conv448 = spec_cost(spec, 448).madds - fixed
    conv224 = spec_cost(spec, 224).madds - fixed
    assert conv448 == 4 * conv224
    # odd sizes round up at every stride (TF "SAME" output sizes): 225 -> 113 -> 57 -> 29 -> 15 -> 8
    assert spec_cost(spec, 225).layers[-3].out_shape == (960, 8, 8)


def test_hook_counter_on_foreign_module():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 5 * 5, 4))
    assert count_madds(m, (1, 3, 10, 10)) == 8 * 5 * 5 * 27 + 200 * 4
