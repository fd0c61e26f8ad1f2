"""From preprocessed (N, L, C) arrays to batches of PyTorch (N, C, L) tensors.

This is the one place where the user's (patients, timesteps, features) layout becomes
Conv1d's (batch, channels, length): features are the channels, time is the length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def to_channels_first(x: np.ndarray) -> torch.Tensor:
    """(N, L, C) array -> contiguous (N, C, L) float32 tensor: the single permute."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 2, 1).contiguous()


DEVICE_SHARE = 0.5  # the most of an accelerator's free memory the data may take


def to_device_if_fits(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple:
    """Copy the whole split to a GPU once, so that no step waits for a host-to-device copy.

    Batches are then sliced on the device and Lightning's per-batch transfer is a no-op.
    When the split would take more than ``DEVICE_SHARE`` of the free GPU memory (which the
    model's activations also need), or the device is the CPU, the tensors stay where they
    are and each batch is copied as it is served.
    """
    if device.type != "cuda" or all(t.device == device for t in tensors):
        return tensors
    size = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size > DEVICE_SHARE * free:
        return tensors
    return tuple(t.to(device) for t in tensors)


class TensorBatches:
    """Serve whole batches by indexing tensors once per batch.

    A Dataset + DataLoader would call ``__getitem__`` per patient and collate; slicing
    the stacked tensors with an index vector does the same work in one call.

    Under distributed training (``world_size`` > 1) each process serves its own shard,
    by ``torch.utils.data.DistributedSampler``'s rule: every process draws the same
    seeded permutation (one per epoch) and takes every ``world_size``-th patient of it,
    starting at its ``rank``, so the shards are disjoint. ``even=True`` (training) pads
    the order with its first patients to a multiple of ``world_size``, so that every
    process runs the same number of steps (DDP averages gradients at each one): at most
    ``world_size - 1`` patients are served twice per epoch. ``even=False`` (validation,
    test) pads nothing, so each patient is served by exactly one process and the metrics
    gathered across processes count every patient once.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} processes")
        self.tensors = tensors
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.n = len(tensors[0])
        self.rank, self.world_size, self.even = int(rank), int(world_size), even

    @property
    def shard_size(self) -> int:
        """The patients this process serves per epoch (padding included)."""
        if self.world_size == 1:
            return self.n
        if self.even:
            return -(-self.n // self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return (self.shard_size + self.batch_size - 1) // self.batch_size

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This process's positions of the epoch's ``order`` (all of it on one process)."""
        if self.world_size == 1:
            return order
        if self.even and len(order) % self.world_size:
            total = self.shard_size * self.world_size
            order = order.repeat(-(-total // len(order)))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator)
        elif self.world_size == 1:  # slices, not copies
            for start in range(0, self.n, self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            return
        else:
            order = torch.arange(self.n)
        mine = self.shard(order).to(self.tensors[0].device)
        for start in range(0, len(mine), self.batch_size):
            idx = mine[start : start + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)
