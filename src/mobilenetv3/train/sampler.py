"""Seeded, shardable, resumable sampling: what makes a killed run resume onto exactly the same batches.

* The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so batch ``b`` of epoch ``e`` is the
  same whenever it is produced; a resumed run skips the batches it has already trained on.
* A global batch of ``batch_size`` indices is cut into ``world_size`` equal contiguous shares, one per rank, so the
  union over ranks of step ``s``'s samples is the same whatever the number of processes.
* Each sample carries its own augmentation seed, derived from ``(seed, epoch, index)``; :class:`SeededSamples` seeds
  the generators with it before loading the sample. Random crops and flips then do not depend on which DataLoader
  worker loads the sample, how many workers there are, or where the run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64 over each value in turn)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return x >> 1


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order of ``epoch``: a permutation of ``range(n)`` fixed by ``(seed, epoch)``."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=generator)


class EpochBatchSampler:
    """Batches of ``(index, sample_seed)`` for one epoch and one rank, optionally starting at batch ``start``.

    ``batch_size`` is the global batch (all ranks together); each rank gets ``batch_size // world_size`` samples
    per step. The last incomplete global batch is dropped, so every step has the same size on every rank.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"the batch size ({batch_size}) must be a positive multiple of the number of processes "
                             f"({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.num_batches = num_samples // batch_size
        if not 0 <= start <= self.num_batches:
            raise ValueError(f"start batch {start} out of range (the epoch has {self.num_batches} batches)")
        self.start = start

    def __len__(self) -> int:
        return self.num_batches - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_permutation(self.num_samples, self.seed, self.epoch, self.shuffle).tolist()
        share = self.batch_size // self.world_size
        for b in range(self.start, self.num_batches):
            lo = b * self.batch_size + self.rank * share
            yield [(i, mix_seed(self.seed, self.epoch, i)) for i in order[lo:lo + share]]


class SeededSamples(Dataset):
    """Wraps a dataset so that a key ``(index, seed)`` loads ``dataset[index]`` with the generators seeded by ``seed``.

    Seeds torch's default generator (the data package's transforms draw from it), NumPy's and Python's. In the main
    process (``num_workers=0``) the generators' states are saved and restored around each batch, so loading data
    does not disturb the training's own random stream (dropout); DataLoader workers need no restoring.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _load(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        return self.dataset[index]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[Any]:
        if get_worker_info() is not None:
            return [self._load(k) for k in keys]
        saved = torch.default_generator.get_state(), random.getstate(), np.random.get_state()
        try:
            return [self._load(k) for k in keys]
        finally:
            torch.default_generator.set_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


class ShardedRange:
    """Keys ``(index, seed)`` for indices ``rank, rank + world_size, ...`` below ``n``: an evaluation shard (no
    padding, no overlap). The seeds are fixed per index, so even a random evaluation transform gives the same
    result whatever the workers and processes, and leaves the training's random stream alone."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.indices = range(rank, n, world_size)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, mix_seed(self.seed, -1, i)) for i in self.indices)
