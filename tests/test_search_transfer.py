"""search.transfer: NetAdapt's weight transfer between specs that differ only in channel widths.

The checks compare against independent truths: a transfer to the same spec is an exact copy; channels made dead
by hand (zero filters, zero BN output) are exactly the ones an L2-norm choice drops, so the narrower network
computes the same function; hand-set filter norms give a known top-k."""

import pytest
import torch

from mobilenetv3 import zoo
from mobilenetv3.model import MobileNetV3
from mobilenetv3.search import channels
from mobilenetv3.search.transfer import kept_channels, transfer_weights
from mobilenetv3.spec import ArchSpec, BlockSpec, SpecError

torch.set_num_threads(1)


def small_spec() -> ArchSpec:
    return zoo.mobilenet_v3_small(1.0, num_classes=10).replace(resolution=32)


def trained_like(spec: ArchSpec, seed: int = 0) -> MobileNetV3:
    """A model in eval mode whose BNs are not identities but hold the statistics of real activations (so the
    output depends on the input) and whose logits are of order one."""
    torch.manual_seed(seed)
    model = MobileNetV3(spec)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.momentum = None  # a cumulative average over the calibration batches
        model.classifier.weight.normal_(0, 0.02)
        model.train()
        for _ in range(2):
            model(torch.randn(16, 3, spec.resolution, spec.resolution))
    for bn in bns:
        bn.momentum = spec.bn_momentum
    return model.eval()


def group(spec: ArchSpec, name: str) -> channels.Group:
    return next(g for g in channels.residual_groups(spec) if g.name == name)


def test_same_spec_is_an_exact_copy_in_the_same_mode():
    spec = small_spec()
    source = trained_like(spec)
    x = torch.randn(2, 3, 32, 32)
    copy = transfer_weights(source, spec)
    assert copy is not source and copy.spec == spec
    assert torch.equal(copy(x), source(x))
    a, b = source.state_dict(), copy.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not copy.training
    source.train()
    source.features[3].eval()  # a mixed mode is kept module by module
    copy = transfer_weights(source, spec)
    assert copy.training and not copy.features[3].training and copy.features[4].training


def kill_expansion(model: MobileNetV3, index: int, dead: list[int]) -> None:
    block = model.features[index + 1]
    block.expand.conv.weight[dead] = 0
    for bn in (block.expand.bn, block.dw.bn):  # the depthwise BN would turn a zero input into its bias
        bn.weight[dead] = 0
        bn.bias[dead] = 0


def kill_group(model: MobileNetV3, members: tuple[int, ...], dead: list[int]) -> None:
    for i in members:
        layer = model.features[0] if i == channels.STEM else model.features[i + 1].project
        layer.conv.weight[dead] = 0
        layer.bn.weight[dead] = 0
        layer.bn.bias[dead] = 0


def kill_last(model: MobileNetV3, dead: list[int]) -> None:
    last = model.features[len(model.spec.blocks) + 1]
    last.conv.weight[dead] = 0
    last.bn.weight[dead] = 0
    last.bn.bias[dead] = 0


@pytest.mark.parametrize("case", ["expansion", "group", "last"])
def test_dead_channels_are_the_ones_dropped(case):
    spec = small_spec()
    source = trained_like(spec)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        if case == "expansion":  # block 2: an expansion of 72 without SE (SE's squeeze would move with it)
            dead, space = [3, 10, 40, 71], "expand:block2"
            narrow = channels.with_expansion(spec, 1, 72 - len(dead))
            before = source(x)
            kill_expansion(source, 1, dead)
        elif case == "group":  # blocks 4-6 (40 channels); every reader has its own expansion
            dead, space = [0, 7, 39], "group:block4-block6"
            g = group(spec, space)
            narrow = channels.with_group_width(spec, g, g.width - len(dead))
            before = source(x)
            kill_group(source, g.members, dead)
        else:
            dead, space = [1, 100, 300, 301, 575], "expand:last"
            narrow = channels.with_expansion(spec, channels.LAST, spec.last_channels - len(dead))
            before = source(x)
            kill_last(source, dead)
        reference = source(x)
        assert not torch.allclose(reference, before, atol=1e-3)  # the killed channels mattered
        kept = kept_channels(source, narrow)[space]
        out = transfer_weights(source, narrow)(x)
    total = spec.blocks[1].exp if case == "expansion" else (40 if case == "group" else spec.last_channels)
    assert kept == tuple(c for c in range(total) if c not in dead)
    assert 0.2 < reference.abs().max() < 10  # logits of order one, so 1e-5 is a real bound
    assert not torch.allclose(reference[0], reference[1], atol=0.1)  # and they depend on the input
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_dropping_live_channels_changes_the_output():
    """The control for the test above: the same narrowing without dead channels does change the function."""
    spec = small_spec()
    source = trained_like(spec)
    x = torch.randn(2, 3, 32, 32)
    narrow = channels.with_expansion(spec, channels.LAST, spec.last_channels - 5)
    with torch.no_grad():
        assert not torch.allclose(transfer_weights(source, narrow)(x), source(x), atol=1e-4)


def test_a_block_with_se_transfers_with_its_squeeze():
    spec = small_spec()
    source = trained_like(spec)
    narrow = channels.with_expansion(spec, 4, 200)  # block 5: 240 -> 200, its squeeze 64 -> 48
    assert (spec.se_channels(4), narrow.se_channels(4)) == (64, 48)
    model = transfer_weights(source, narrow)
    kept = kept_channels(source, narrow)
    exp, squeeze = torch.tensor(kept["expand:block5"]), torch.tensor(kept["se:block5"])
    assert (len(exp), len(squeeze)) == (200, 48)
    src, dst = source.features[5].se, model.features[5].se
    assert torch.equal(dst.reduce.weight, src.reduce.weight[squeeze][:, exp])
    assert torch.equal(dst.reduce.bias, src.reduce.bias[squeeze])
    assert torch.equal(dst.expand.weight, src.expand.weight[exp][:, squeeze])
    assert torch.equal(model.features[5].dw.conv.weight, source.features[5].dw.conv.weight[exp])
    norms = src.reduce.weight.flatten(1).norm(dim=1)
    assert norms[squeeze].min() >= norms[[c for c in range(64) if c not in squeeze.tolist()]].max()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_a_block_without_expansion_follows_the_group_it_reads():
    """V3-Small's block 1 runs its depthwise conv, SE and projection on the stem's channels."""
    spec = small_spec()
    source = trained_like(spec)
    narrow = channels.with_group_width(spec, group(spec, "group:stem"), 8)
    assert narrow.blocks[0].exp == 8 and narrow.se_channels(0) == 8
    model = transfer_weights(source, narrow)
    kept = kept_channels(source, narrow)
    stem, squeeze = torch.tensor(kept["group:stem"]), torch.tensor(kept["se:block1"])
    norms = source.features[0].conv.weight.flatten(1).norm(dim=1)
    assert torch.equal(stem, norms.argsort(descending=True)[:8].sort().values)
    src, dst = source.features[1], model.features[1]
    assert dst.expand is None
    assert torch.equal(model.features[0].bn.running_var, source.features[0].bn.running_var[stem])
    assert torch.equal(dst.dw.conv.weight, src.dw.conv.weight[stem])
    assert torch.equal(dst.dw.bn.running_mean, src.dw.bn.running_mean[stem])
    assert torch.equal(dst.se.reduce.weight, src.se.reduce.weight[squeeze][:, stem])
    assert torch.equal(dst.se.expand.bias, src.se.expand.bias[stem])
    assert torch.equal(dst.project.conv.weight, src.project.conv.weight[:, stem])
    assert dst.project.conv.weight.shape == (16, 8, 1, 1)  # block 1's own output group is untouched


def set_norms(weight: torch.Tensor, norms: list[float]) -> None:
    """Filter c of ``weight`` gets L2 norm ``norms[c]`` (one non-zero entry)."""
    weight.zero_()
    for c, n in enumerate(norms):
        weight[c].view(-1)[0] = n


def test_kept_channels_are_the_top_k_by_l2_norm():
    spec = ArchSpec(name="tiny", blocks=(BlockSpec(3, 12, 4, stride=2), BlockSpec(3, 10, 4)), stem_channels=4,
                    last_channels=6, head_channels=5, num_classes=3, resolution=16)
    source = MobileNetV3(spec).eval()
    stem_norms = [1, 5, 2, 0.5]
    exp_norms = [0.3, 2, 0.1, 7, 5, 0.2, 6, 1, 3, 0.4, 4, 0.5]
    with torch.no_grad():
        set_norms(source.features[0].conv.weight, stem_norms)
        set_norms(source.features[1].expand.conv.weight, exp_norms)
        set_norms(source.features[1].project.conv.weight, [1, 5, 2, 0.5])  # group of blocks 1-2: the sums
        set_norms(source.features[2].project.conv.weight, [4.5, 0, 2, 1])  # [5.5, 5, 4, 1.5]
        set_norms(source.conv_head.weight, [1, 3, 2, 5, 4])
        bn = source.features[1].expand.bn
        bn.running_mean.copy_(torch.arange(12.0))
        bn.num_batches_tracked.fill_(7)
    narrow = channels.with_group_width(spec, group(spec, "group:stem"), 2)
    narrow = channels.with_group_width(narrow, group(narrow, "group:block1-block2"), 2)
    narrow = channels.with_expansion(narrow, 0, 5).replace(head_channels=3)
    kept = kept_channels(source, narrow)
    assert kept["group:stem"] == (1, 2)  # the stem's own norms
    assert kept["group:block1-block2"] == (0, 1)  # by the sum; either producer alone would pick (1, 2) / (0, 2)
    assert kept["expand:block1"] == (3, 4, 6, 8, 10)  # norms 7, 5, 6, 3, 4
    assert kept["head"] == (1, 3, 4)
    assert kept["expand:block2"] == tuple(range(10)) and kept["expand:last"] == tuple(range(6))  # unchanged
    model = transfer_weights(source, narrow)
    exp, stem = [3, 4, 6, 8, 10], [1, 2]
    assert torch.equal(model.features[1].expand.conv.weight, source.features[1].expand.conv.weight[exp][:, stem])
    assert torch.equal(model.features[1].expand.bn.running_mean, torch.tensor([3.0, 4, 6, 8, 10]))
    assert int(model.features[1].expand.bn.num_batches_tracked) == 7
    assert torch.equal(model.features[2].expand.conv.weight, source.features[2].expand.conv.weight[:, [0, 1]])
    assert torch.equal(model.conv_head.bias, source.conv_head.bias[[1, 3, 4]])
    assert torch.equal(model.classifier.weight, source.classifier.weight[:, [1, 3, 4]])
    assert torch.equal(model.features[3].conv.weight, source.features[3].conv.weight[:, [0, 1]])


def test_ties_keep_the_lower_indices():
    spec = small_spec()
    source = trained_like(spec)
    with torch.no_grad():
        source.conv_head.weight.fill_(0.25)  # every filter has the same norm
    kept = kept_channels(source, spec.replace(head_channels=1000))
    assert kept["head"] == tuple(range(1000))


def test_growing_initialises_new_channels_from_the_seed():
    spec = small_spec()
    source = trained_like(spec)
    wide = channels.with_expansion(spec, 1, 80)
    wide = channels.with_group_width(wide, group(wide, "group:block4-block6"), 44)
    wide = channels.with_expansion(wide, channels.LAST, 640)
    rng = torch.get_rng_state()
    a, b, c = (transfer_weights(source, wide, seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is left alone
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    expand = "features.2.expand.conv.weight"
    assert torch.equal(sa[expand][:72], source.state_dict()[expand])
    assert not torch.equal(sa[expand][72:], sc[expand][72:]) and torch.equal(sa[expand][:72], sc[expand][:72])
    assert sa[expand][72:].abs().sum() > 0
    last = a.features[12]
    new_rows = last.conv.weight[576:]
    expected_std = (2 / 640) ** 0.5  # He-normal, fan-out of the new layer, as init_weights draws it
    assert abs(new_rows.std().item() / expected_std - 1) < 0.1
    assert torch.equal(last.conv.weight[:576], source.features[12].conv.weight)
    for bn in (last.bn, a.features[4].project.bn):
        n = bn.num_features
        old = 576 if bn is last.bn else 40
        assert torch.equal(bn.weight[old:], torch.ones(n - old)) and torch.equal(bn.bias[old:], torch.zeros(n - old))
        assert torch.equal(bn.running_mean[old:], torch.zeros(n - old))
        assert torch.equal(bn.running_var[old:], torch.ones(n - old))
    with torch.no_grad():
        out = a(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.replace(blocks=s.blocks[:-1]), "number of blocks: 11 in the source, 10 in the target"),
    (lambda s: s.replace(blocks=s.blocks[:2] + (BlockSpec(5, 88, 24),) + s.blocks[3:]),
     "block 3: kernel 3 in the source, 5 in the target"),
    (lambda s: s.replace(blocks=s.blocks[:1] + (BlockSpec(3, 16, 24, stride=2),) + s.blocks[2:]),
     "block 2: a 1x1 expansion in the source but not in the target"),
    (lambda s: s.replace(num_classes=7), "num_classes: 10 in the source, 7 in the target"),
    (lambda s: s.replace(head_channels=0), "head_channels: 1024 in the source, 0 in the target"),
])
def test_a_different_structure_is_refused(change, message):
    spec = small_spec()
    source = MobileNetV3(spec)
    with pytest.raises(SpecError, match=message):
        transfer_weights(source, change(spec))


def test_weights_that_do_not_match_the_source_spec_are_refused():
    spec = small_spec()
    source = MobileNetV3(spec)
    source.spec = channels.with_expansion(spec, channels.LAST, 512)  # the spec no longer describes the weights
    with pytest.raises(ValueError, match=r"features\.12\.conv\.weight has shape \(576, 96, 1, 1\)"):
        transfer_weights(source, spec)
