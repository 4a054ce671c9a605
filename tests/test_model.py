import pytest
import torch
import torch.nn.functional as F

from mobilenetv3 import ArchSpec, BlockSpec, build, get_spec, mobilenet_v3_large, mobilenet_v3_small
from mobilenetv3.layers import SameConv2d, hard_sigmoid, hard_swish


def test_activations_match_their_formulas():
    x = torch.linspace(-6, 6, 121)
    relu6 = torch.clamp(x + 3, 0, 6)
    assert torch.allclose(hard_sigmoid(x), relu6 / 6)
    assert torch.allclose(hard_swish(x), x * relu6 / 6)
    assert hard_swish(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0.0, 0.0, 3.0]


@pytest.mark.parametrize("builder", [mobilenet_v3_large, mobilenet_v3_small])
@pytest.mark.parametrize("res", [96, 97, 128, 161, 224, 225, 320])
def test_output_shapes(builder, res):
    model = builder(num_classes=7).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, res, res))
        logits = model.forward_head(feats)
    side = -(-res // 32)  # ceil: every stride-2 layer rounds up
    assert feats.shape == (2, model.spec.features_channels, side, side)
    assert logits.shape == (2, 7)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mnasnet_a1", "mobilenet_v3_small_minimal",
                                  "mobilenet_v3_small_paper_head"])
def test_other_zoo_models_run(name):
    model = build(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


def test_small_last_se_option():
    spec = get_spec("mobilenet_v3_small", last_se=True)
    model = build(spec).eval()
    assert model.spec.last_se_channels() == 144
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=5, dropout=0.0).train()
    loss = F.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_structure_follows_table_1():
    model = mobilenet_v3_large()
    blocks = model.features[1:16]
    assert [b.dw.conv.kernel_size[0] for b in blocks] == [3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5]
    assert [b.se is not None for b in blocks] == [False] * 3 + [True] * 3 + [False] * 4 + [True] * 5
    assert blocks[0].expand is None  # exp 16 == input 16: no expansion conv
    assert isinstance(blocks[6].dw.act, torch.nn.Hardswish) and isinstance(blocks[5].dw.act, torch.nn.ReLU)
    assert model.conv_head.bias is not None and model.conv_head.out_channels == 1280


def test_taps_strides_and_ssdlite_c4():
    model = mobilenet_v3_large().eval()
    names = ["stride8", "stride16", "stride32", "C4", "C5"]
    with torch.no_grad():
        taps = model.forward_taps(torch.randn(1, 3, 224, 224), names)
    assert taps["stride8"].shape == (1, 40, 28, 28)
    assert taps["stride16"].shape == (1, 112, 14, 14)
    assert taps["stride32"].shape == (1, 160, 7, 7)
    assert taps["C4"].shape == (1, 672, 14, 14)  # expansion of the 13th bottleneck (section 6.3)
    assert taps["C5"].shape == (1, 960, 7, 7)
    info = {t.name: t for t in model.tap_info()}
    assert info["C4"].index == 13 and info["C4"].stride == 16
    small = mobilenet_v3_small().eval()
    with torch.no_grad():
        c4 = small.forward_taps(torch.randn(1, 3, 224, 224), ["C4"])["C4"]
    assert c4.shape == (1, 288, 14, 14)  # expansion of Small's 9th bottleneck
    with pytest.raises(KeyError, match="unknown tap"):
        model.forward_taps(torch.randn(1, 3, 64, 64), ["stride64"])


def test_taps_agree_with_plain_forward():
    model = mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model.forward_taps(x, ["features"])["features"], model.forward_features(x))


def test_reset_classifier_updates_spec():
    model = mobilenet_v3_small()
    model.reset_classifier(3, dropout=0.1)
    assert model.spec.num_classes == 3 and model.spec.dropout == 0.1
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert build(model.spec).classifier.out_features == 3


def test_dilated_backbone_keeps_resolution():
    from mobilenetv3 import with_output_stride

    model = build(with_output_stride(get_spec("mobilenet_v3_large"), 16)).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 960, 14, 14)
    assert model.features[14].dw.conv.dilation == (2, 2) and model.features[13].dw.conv.dilation == (1, 1)
    small = mobilenet_v3_small(output_stride=8).eval()
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 3, 96, 96)).shape == (1, 576, 12, 12)


@pytest.mark.parametrize("size,kernel,stride,expected", [(224, 3, 2, (0, 1)), (14, 5, 2, (1, 2)),
                                                         (15, 5, 2, (2, 2)), (7, 3, 1, (1, 1))])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    # TF: out = ceil(in / s); total pad = max((out - 1) * s + k - in, 0), the extra pixel at the end.
    conv = SameConv2d(1, 1, kernel, stride=stride, bias=False)
    assert conv._pad(size, 0) == expected
    x = torch.randn(1, 1, size, size)
    lo, hi = expected
    ref = F.conv2d(F.pad(x, (lo, hi, lo, hi)), conv.weight, stride=stride)
    assert torch.equal(conv(x), ref)


def test_same_padding_spec_builds_tf_layers():
    spec = get_spec("mobilenet_v3_small", padding="same")
    model = build(spec).eval()
    assert isinstance(model.features[0].conv, SameConv2d)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_one_channel_stem():
    spec = ArchSpec(name="tiny", blocks=(BlockSpec(3, 16, 16, se=True, act="hswish", stride=2),),
                    in_channels=1, num_classes=10, last_channels=32, head_channels=64, resolution=28)
    model = build(spec).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
