"""The NAS controller: an LSTM that samples one architecture of a search space token by token (paper section 4.1).

MobileNetV3 uses "the same RNN-based controller" as MnasNet, which follows Zoph and Le's NAS-RL controller: an
LSTM makes one decision per step, each from its own softmax over that decision's options, and the token it chose
is embedded and fed back as the next step's input. Here a decision is one field of one stage of the factorised
hierarchical space (:mod:`.space`): depth delta, kernel, expansion, squeeze-and-excite, activation and width
multiplier, so a space of S stages takes 6 x S decisions, and the tokens are indices into each field's options.

Learning. :meth:`Controller.update` takes a batch of samples and their rewards (:mod:`.reward`):

- ``reinforce``: the policy gradient with an exponential moving-average baseline, one Adam step on
  ``-(advantage x sum of log-probabilities) - entropy_weight x entropy``, advantage = reward - baseline;
- ``ppo`` (MnasNet's choice, Proximal Policy Optimisation): a few Adam steps over the batch on the clipped
  surrogate ``min(r x A, clip(r, 1 - 0.2, 1 + 0.2) x A)``, r the probability ratio to the policy that sampled.

The baseline starts at the first batch's mean reward (so the first update pushes towards that batch's better half
rather than towards everything sampled), then moves towards each reward in turn with ``baseline_decay``.

Determinism. Weights are initialised and tokens drawn from the controller's own ``torch.Generator`` seeded by
``seed``, never from torch's global generator, so the same seed and the same rewards give the same tokens.
:meth:`state_dict` holds the weights, the optimiser, the baseline and the generator, so a restored controller
continues exactly as the original would have. The head layers start at zero: the first policy is uniform.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .space import Choice, SearchSpace, StageChoice

ALGORITHMS = ("reinforce", "ppo")
# The StageChoices field holding each StageChoice field's options, in StageChoice's order.
OPTION_FIELDS = ("depth_deltas", "kernels", "expansions", "se", "acts", "width_mults")
INIT_RANGE = 0.1  # uniform initialisation of the LSTM and embeddings (NAS-RL and ENAS use +-0.08 / +-0.1)


@dataclass(frozen=True)
class Decision:
    """One controller step: field ``field`` (a :class:`StageChoice` field) of stage ``stage``."""

    stage: int
    field: str
    options: tuple


def decisions(space: SearchSpace) -> list[Decision]:
    """The controller's decisions for ``space``: 6 per stage, in stage order, fields in StageChoice order."""
    return [Decision(s, field, tuple(getattr(space.choices, plural)))
            for s in range(len(space.stages)) for field, plural in zip(StageChoice._fields, OPTION_FIELDS, strict=True)]


def choice_to_tokens(space: SearchSpace, choice: Choice) -> tuple[int, ...]:
    """The option indices that encode ``choice`` (a ValueError names a value that is not an option)."""
    values = [v for stage in choice for v in StageChoice(*stage)]
    ds = decisions(space)
    if len(values) != len(ds):
        raise ValueError(f"space {space.name!r} takes {len(ds)} decisions, the choice gives {len(values)}")
    tokens = []
    for d, v in zip(ds, values, strict=True):
        if v not in d.options:
            raise ValueError(f"stage {d.stage + 1}: {d.field} {v!r} is not a choice (options {d.options})")
        tokens.append(d.options.index(v))
    return tuple(tokens)


def tokens_to_choice(space: SearchSpace, tokens: Sequence[int]) -> Choice:
    """The choice that ``tokens`` (one option index per decision) encode."""
    ds = decisions(space)
    if len(tokens) != len(ds):
        raise ValueError(f"space {space.name!r} takes {len(ds)} tokens, got {len(tokens)}")
    values = []
    for d, t in zip(ds, tokens, strict=True):
        if not 0 <= int(t) < len(d.options):
            raise ValueError(f"stage {d.stage + 1}: token {t} for {d.field} is out of range 0..{len(d.options) - 1}")
        values.append(d.options[int(t)])
    per = len(StageChoice._fields)
    return tuple(StageChoice(*values[i:i + per]) for i in range(0, len(values), per))


class Sample(NamedTuple):
    """One sampled architecture: its tokens, the choice they encode, and the sampling policy's log-probability
    (summed over decisions) and entropy (summed over decisions)."""

    tokens: tuple[int, ...]
    choice: Choice
    log_prob: float
    entropy: float


class _Policy(nn.Module):
    """Start token and per-decision token embeddings, an LSTM cell, and one linear head per decision."""

    def __init__(self, sizes: Sequence[int], hidden: int) -> None:
        super().__init__()
        self.sizes = list(sizes)
        offsets = [1]  # embedding row 0 is the start token
        for n in self.sizes[:-1]:
            offsets.append(offsets[-1] + n)
        self.offsets = offsets
        self.embed = nn.Embedding(1 + sum(self.sizes), hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.sizes)

    def logits(self, tokens: torch.Tensor | None, batch: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Run every decision for ``batch`` sequences. With ``tokens`` (batch, T) given, each step is fed the given
        token (teacher forcing); without, tokens are drawn from ``generator``. Returns (tokens, per-step
        log-softmax, summed entropy per sequence)."""
        hidden = self.cell.hidden_size
        h = torch.zeros(batch, hidden)
        c = torch.zeros(batch, hidden)
        x = self.embed(torch.zeros(batch, dtype=torch.long))
        chosen, log_probs = [], []
        entropy = torch.zeros(batch)
        for t, head in enumerate(self.heads):
            h, c = self.cell(x, (h, c))
            logp = torch.log_softmax(head(h), dim=-1)
            entropy = entropy - (logp.exp() * logp).sum(-1)
            if tokens is None:
                tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            else:
                tok = tokens[:, t]
            chosen.append(tok)
            log_probs.append(logp)
            x = self.embed(tok + self.offsets[t])
        return torch.stack(chosen, 1), log_probs, entropy


class Controller:
    """An LSTM policy over ``space``'s decisions (see the module doc).

    ``lr`` and ``entropy_weight`` are sized for budgets of about a hundred samples (25 updates of 4): on a toy
    reward where one option of one decision adds 0.02 to a reward of 0.6 (noise 0.01), both algorithms take that
    option's probability from 1/3 to 0.8-1.0 within 25 updates (seeds 0-2; REINFORCE above 0.99), while at
    ENAS's lr 3.5e-4 it stays below 0.42."""

    def __init__(self, space: SearchSpace, *, hidden: int = 64, seed: int = 0, lr: float = 0.01,
                 entropy_weight: float = 1e-3, baseline_decay: float = 0.95, algorithm: str = "reinforce",
                 ppo_clip: float = 0.2, ppo_epochs: int = 4) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown controller algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if hidden < 1 or lr <= 0 or entropy_weight < 0 or not 0 <= baseline_decay < 1:
            raise ValueError(f"controller settings out of range: hidden {hidden} (>= 1), lr {lr} (> 0), "
                             f"entropy_weight {entropy_weight} (>= 0), baseline_decay {baseline_decay} (in [0, 1))")
        if not 0 < ppo_clip < 1 or ppo_epochs < 1:
            raise ValueError(f"ppo_clip must be in (0, 1) and ppo_epochs >= 1, got {ppo_clip} and {ppo_epochs}")
        self.space = space
        self.decisions = decisions(space)
        self.hidden, self.seed, self.lr = hidden, seed, lr
        self.entropy_weight, self.baseline_decay = entropy_weight, baseline_decay
        self.algorithm, self.ppo_clip, self.ppo_epochs = algorithm, ppo_clip, ppo_epochs
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # nn's own initialisation draws from the global generator: undo it
            self.policy = _Policy([len(d.options) for d in self.decisions], hidden)
        with torch.no_grad():
            for name, p in self.policy.named_parameters():
                if name.startswith("heads."):
                    p.zero_()
                else:
                    p.uniform_(-INIT_RANGE, INIT_RANGE, generator=self.generator)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.baseline: float | None = None
        self.updates = 0

    # -- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self) -> Sample:
        """One architecture drawn from the current policy with the controller's generator."""
        tokens, log_probs, entropy = self.policy.logits(None, 1, self.generator)
        row = tokens[0]
        log_prob = sum(float(lp[0, int(tok)]) for lp, tok in zip(log_probs, row, strict=True))
        toks = tuple(int(t) for t in row)
        return Sample(toks, tokens_to_choice(self.space, toks), log_prob, float(entropy[0]))

    def sample_batch(self, n: int) -> list[Sample]:
        return [self.sample() for _ in range(n)]

    def evaluate(self, tokens: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed log-probability, summed entropy) of each token sequence under the current policy, with
        gradients."""
        batch = torch.tensor([list(t) for t in tokens], dtype=torch.long)
        if batch.ndim != 2 or batch.shape[1] != len(self.decisions):
            raise ValueError(f"expected sequences of {len(self.decisions)} tokens, got shape {tuple(batch.shape)}")
        _, log_probs, entropy = self.policy.logits(batch, len(batch))
        picked = torch.stack([lp.gather(1, batch[:, t:t + 1]).squeeze(1) for t, lp in enumerate(log_probs)], 1)
        return picked.sum(1), entropy

    def probabilities(self, decision: int, prefix: Sequence[int] = ()) -> list[float]:
        """The policy's distribution over decision ``decision``'s options after ``prefix``, the ``decision`` tokens
        chosen before it."""
        if len(prefix) != decision:
            raise ValueError(f"decision {decision} needs the {decision} tokens before it, got {len(prefix)}")
        padded = list(prefix) + [0] * (len(self.decisions) - decision)
        with torch.no_grad():
            _, log_probs, _ = self.policy.logits(torch.tensor([padded]), 1)
        return log_probs[decision][0].exp().tolist()

    # -- learning -----------------------------------------------------------------------------------------
    def update(self, samples: Sequence[Sample | Sequence[int]], rewards: Sequence[float]) -> dict[str, Any]:
        """One policy update from ``samples`` (or bare token sequences) and their ``rewards``; returns the figures
        of the update (loss, baseline before and after, advantages, mean entropy)."""
        if len(samples) != len(rewards) or not samples:
            raise ValueError(f"update needs one reward per sample, got {len(samples)} samples and {len(rewards)} "
                             "rewards")
        if any(not math.isfinite(r) for r in rewards):
            raise ValueError(f"rewards must be finite, got {list(rewards)}")
        tokens = [s.tokens if isinstance(s, Sample) else tuple(s) for s in samples]
        r = torch.tensor([float(x) for x in rewards])
        before = float(r.mean()) if self.baseline is None else self.baseline
        advantage = r - before
        if self.algorithm == "reinforce":
            log_prob, entropy = self.evaluate(tokens)
            loss = self._step(-(advantage * log_prob).mean() - self.entropy_weight * entropy.mean())
        else:
            with torch.no_grad():
                old, _ = self.evaluate(tokens)
            for _ in range(self.ppo_epochs):
                log_prob, entropy = self.evaluate(tokens)
                ratio = torch.exp(log_prob - old)
                clipped = torch.clamp(ratio, 1 - self.ppo_clip, 1 + self.ppo_clip)
                surrogate = torch.minimum(ratio * advantage, clipped * advantage)
                loss = self._step(-surrogate.mean() - self.entropy_weight * entropy.mean())
        baseline = before
        for x in rewards:
            baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * float(x)
        self.baseline = baseline
        self.updates += 1
        return {"loss": loss, "baseline_before": before, "baseline": baseline,
                "advantages": [float(a) for a in advantage], "entropy": float(entropy.detach().mean()),
                "updates": self.updates}

    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # -- state ---------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"decisions": [len(d.options) for d in self.decisions], "hidden": self.hidden,
                "algorithm": self.algorithm}

    def state_dict(self) -> dict[str, Any]:
        """Everything the controller's future depends on: weights, Adam's state, baseline, generator, updates."""
        return copy.deepcopy({"config": self.config(), "policy": self.policy.state_dict(),
                              "optimizer": self.optimizer.state_dict(), "baseline": self.baseline,
                              "generator": self.generator.get_state(), "updates": self.updates})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; a controller of another shape or algorithm is refused."""
        missing = [k for k in ("config", "policy", "optimizer", "baseline", "generator", "updates") if k not in state]
        if missing:
            raise ValueError(f"not a controller state: missing {missing}")
        if state["config"] != self.config():
            raise ValueError(f"the controller state is for {state['config']}, this controller is {self.config()}")
        state = copy.deepcopy(state)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


__all__ = ["ALGORITHMS", "Controller", "Decision", "Sample", "choice_to_tokens", "decisions", "tokens_to_choice"]
