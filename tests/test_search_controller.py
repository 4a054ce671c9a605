"""The NAS controller: tokens encode choices both ways, REINFORCE and PPO learn a toy reward, the EMA baseline is
MnasNet's, and sampling is seeded by the controller's own generator so that a restored state continues exactly."""

import pytest
import torch

from mobilenetv3.search.controller import Controller, Sample, choice_to_tokens, decisions, tokens_to_choice
from mobilenetv3.search.space import StageChoice, get_space

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    return get_space("mobilenet_v3_small")


def test_decisions_and_tokens_round_trip(small):
    ds = decisions(small)
    assert len(ds) == 6 * len(small.stages) == 30
    assert [d.field for d in ds[:6]] == list(StageChoice._fields)
    assert ds[1].options == (3, 5, 7) and ds[6].stage == 1
    choice = tuple(StageChoice(1, 7, 6, True, "hswish", 1.25) for _ in small.stages)
    tokens = choice_to_tokens(small, choice)
    assert tokens[:6] == (2, 2, 3, 1, 1, 2)  # indices into (-1,0,1), (3,5,7), (1,3,4,6), (F,T), (relu,hswish), widths
    assert tokens_to_choice(small, tokens) == choice
    with pytest.raises(ValueError, match="kernel 9"):
        choice_to_tokens(small, (StageChoice(0, 9, 6, True, "relu", 1.0),) * len(small.stages))
    with pytest.raises(ValueError, match="out of range"):
        tokens_to_choice(small, (3,) + tokens[1:])


def test_first_policy_is_uniform_and_the_global_generator_is_untouched(small):
    before = torch.random.get_rng_state()
    c = Controller(small, seed=3)
    s = c.sample()
    assert torch.equal(before, torch.random.get_rng_state())
    assert c.probabilities(0) == pytest.approx([1 / 3] * 3)
    assert c.probabilities(2, s.tokens[:2]) == pytest.approx([1 / 4] * 4)
    # uniform policy: log-probability and entropy are sums over the decisions' option counts
    log_n = sum(torch.log(torch.tensor(float(len(d.options)))) for d in decisions(small))
    assert s.log_prob == pytest.approx(-float(log_n), abs=1e-5)
    assert s.entropy == pytest.approx(float(log_n), abs=1e-5)
    assert small.decode(s.choice).blocks  # the sample decodes to a spec


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_learns_a_toy_reward(small, algorithm):
    """Reward 1 when the first decision (depth delta) takes option 2, else 0: its probability leaves 1/3."""
    c = Controller(small, seed=0, algorithm=algorithm)
    for _ in range(30):
        samples = c.sample_batch(4)
        c.update(samples, [1.0 if s.tokens[0] == 2 else 0.0 for s in samples])
    assert c.probabilities(0)[2] > 0.8


def test_baseline_is_the_first_mean_then_an_ema(small):
    c = Controller(small, seed=0, baseline_decay=0.95)
    samples = c.sample_batch(4)
    stats = c.update(samples, [1.0, 0.0, 0.0, 1.0])
    assert stats["baseline_before"] == 0.5
    assert stats["advantages"] == [0.5, -0.5, -0.5, 0.5]
    # 0.5 -> 0.525 -> 0.49875 -> 0.4738125 -> 0.500121875
    assert stats["baseline"] == pytest.approx(0.500121875)
    stats = c.update(c.sample_batch(1), [2.0])
    assert stats["baseline_before"] == pytest.approx(0.500121875)
    assert stats["advantages"] == [pytest.approx(2.0 - 0.500121875)]


def test_reinforce_step_raises_the_better_sample(small):
    c = Controller(small, seed=1, lr=1e-3, entropy_weight=0.0)
    a, b = c.sample_batch(2)
    assert a.tokens != b.tokens
    before = c.evaluate([a.tokens, b.tokens])[0].detach()
    c.update([a, b], [1.0, 0.0])
    after = c.evaluate([a.tokens, b.tokens])[0].detach()
    assert after[0] > before[0] and after[1] < before[1]


def run(c: Controller, updates: int) -> list[tuple[int, ...]]:
    """Sample and learn from a reward that depends on the tokens; the tokens drawn, in order."""
    drawn = []
    for _ in range(updates):
        samples = c.sample_batch(3)
        drawn += [s.tokens for s in samples]
        c.update(samples, [sum(s.tokens[:6]) / 10 for s in samples])
    return drawn


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_seeded_and_resumable(small, algorithm):
    a, b = Controller(small, seed=7, algorithm=algorithm), Controller(small, seed=7, algorithm=algorithm)
    assert run(a, 3) == run(b, 3)
    assert run(Controller(small, seed=8, algorithm=algorithm), 1) != run(Controller(small, seed=7,
                                                                                    algorithm=algorithm), 1)
    state = a.state_dict()
    expected = run(a, 3)
    assert state["updates"] == 3 and a.state_dict()["updates"] == 6  # the saved state is a copy, not a view
    restored = Controller(small, seed=99, algorithm=algorithm)
    restored.load_state_dict(state)
    assert run(restored, 3) == expected
    assert restored.baseline == a.baseline


def test_state_of_another_controller_is_refused(small):
    state = Controller(small).state_dict()
    with pytest.raises(ValueError, match="controller state is for"):
        Controller(get_space("mobilenet_v3_large")).load_state_dict(state)
    with pytest.raises(ValueError, match="controller state is for"):
        Controller(small, algorithm="ppo").load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        Controller(small).load_state_dict({"policy": {}})


def test_bad_settings_and_updates_are_refused(small):
    with pytest.raises(ValueError, match="unknown controller algorithm"):
        Controller(small, algorithm="a2c")
    with pytest.raises(ValueError, match="lr"):
        Controller(small, lr=0)
    c = Controller(small)
    samples = c.sample_batch(2)
    with pytest.raises(ValueError, match="one reward per sample"):
        c.update(samples, [1.0])
    with pytest.raises(ValueError, match="finite"):
        c.update(samples, [1.0, float("nan")])
    assert isinstance(samples[0], Sample)
