import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mobilenetv3 import ArchSpec, BlockSpec, SpecError, get_spec, list_models, make_divisible, with_output_stride
from mobilenetv3.spec import ACTIVATIONS, output_stride


def test_make_divisible_reference_values():
    assert make_divisible(12) == 16  # 16 * 0.75
    assert make_divisible(18) == 24  # below 90% of 18 at 16, so one step up
    assert make_divisible(5.6) == 8  # never below the divisor
    assert make_divisible(184.0) == 184
    assert make_divisible(720) == 720


@pytest.mark.parametrize("family,width", list_models())
def test_zoo_json_round_trip(family, width):
    spec = get_spec(family, width)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(again.to_json()) == json.loads(spec.to_json())


def test_save_load(tmp_path):
    spec = get_spec("mobilenet_v3_small", 0.75)
    spec.save(tmp_path / "s.json")
    assert ArchSpec.load(tmp_path / "s.json") == spec
    with pytest.raises(FileNotFoundError):
        ArchSpec.load(tmp_path / "missing.json")


blocks = st.builds(
    BlockSpec,
    kernel=st.sampled_from([1, 3, 5, 7]),
    exp=st.integers(1, 512),
    out=st.integers(1, 512),
    se=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    stride=st.sampled_from([1, 2]),
)


@st.composite
def arch_specs(draw):
    bs = draw(st.lists(blocks, min_size=1, max_size=6))
    # a dilation only on stride-1 blocks
    bs = [BlockSpec(**{**b.__dict__, "dilation": draw(st.sampled_from([1, 2]))}) if b.stride == 1 else b
          for b in bs]
    return ArchSpec(
        name=draw(st.text(min_size=1, max_size=12)), blocks=tuple(bs),
        stem_channels=draw(st.integers(1, 64)), stem_act=draw(st.sampled_from(ACTIVATIONS)),
        in_channels=draw(st.sampled_from([1, 3])), last_channels=draw(st.integers(0, 1024)),
        head_channels=draw(st.integers(0, 2048)), num_classes=draw(st.integers(1, 1000)),
        dropout=draw(st.floats(0, 0.9)), se_ratio=draw(st.floats(0.05, 1.0)),
        se_gate=draw(st.sampled_from(["hard_sigmoid", "sigmoid"])),
        padding=draw(st.sampled_from(["symmetric", "same"])),
        bn_eps=draw(st.floats(1e-6, 1e-2)), extra=draw(st.dictionaries(st.text(max_size=5), st.integers())),
    )


@settings(max_examples=150, deadline=None)
@given(arch_specs())
def test_random_spec_json_round_trip(spec):
    assert ArchSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("block,message", [
    (dict(kernel=3, exp=16, out=16, stride=3), "block 2: stride must be 1 or 2"),
    (dict(kernel=3, exp=16, out=16, act="gelu"), "block 2: unknown activation 'gelu'"),
    (dict(kernel=3, exp=-4, out=16), "block 2: exp must be a positive integer"),
    (dict(kernel=3, exp=16, out=0), "block 2: out must be a positive integer"),
    (dict(kernel=3, exp=16, out=16, stride=2, dilation=2), "block 2: a dilated block"),
    (dict(kernel=4, exp=16, out=16), "block 2: kernel must be odd"),
])
def test_validation_names_the_block(block, message):
    good = BlockSpec(kernel=3, exp=16, out=16)
    with pytest.raises(SpecError, match=message):
        ArchSpec(name="bad", blocks=(good, BlockSpec(**block)))


def test_from_dict_errors():
    data = get_spec("mobilenet_v3_small").to_dict()
    with pytest.raises(SpecError, match="unknown spec field"):
        ArchSpec.from_dict({**data, "colour": "red"})
    with pytest.raises(SpecError, match="block 1: missing field"):
        ArchSpec.from_dict({**data, "blocks": [{"kernel": 3}]})
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{")
    with pytest.raises(SpecError, match="padding"):
        ArchSpec.from_dict({**data, "padding": "valid"})


def test_output_stride_tf_way():
    spec = get_spec("mobilenet_v3_large")
    assert output_stride(spec) == 32
    os16 = with_output_stride(spec, 16)
    assert output_stride(os16) == 16
    # block 13 (the last stride-2 block) loses its stride and keeps rate 1; blocks 14 and 15 get rate 2
    assert (os16.blocks[12].stride, os16.blocks[12].dilation) == (1, 1)
    assert [b.dilation for b in os16.blocks[13:]] == [2, 2]
    os8 = with_output_stride(spec, 8)
    # block 7 keeps rate 1; blocks 8-12 get 2; block 13 loses its stride at the current rate 2; 14-15 get 4
    assert [b.dilation for b in os8.blocks[6:]] == [1] + [2] * 6 + [4] * 2
    with pytest.raises(SpecError):
        with_output_stride(spec, 64)


def test_every_spec_error_numbers_blocks_as_profile_does():
    """A bad value, an unknown field, a missing field and a non-object in the same (second) block all say
    "block 2", the name `mnv3 profile` prints for its layers (block2.dw, ...)."""
    from mobilenetv3.cost import spec_cost

    data = get_spec("mobilenet_v3_small").to_dict()
    second = data["blocks"][1]
    assert [layer.name for layer in spec_cost(get_spec("mobilenet_v3_small")).layers if layer.name.startswith(
        "block2.")] == ["block2.expand", "block2.dw", "block2.project"]
    for bad in ({**second, "stride": 3}, {**second, "colour": "red"}, {"kernel": 3}, "not a block"):
        blocks = [data["blocks"][0], bad, *data["blocks"][2:]]
        with pytest.raises(SpecError, match=r"block 2: "):
            ArchSpec.from_dict({**data, "blocks": blocks})
