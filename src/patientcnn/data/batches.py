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
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        self.tensors = tensors
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.n = len(tensors[0])

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).to(self.tensors[0].device)
            for start in range(0, self.n, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
        else:
            for start in range(0, self.n, self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
