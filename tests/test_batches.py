"""Batch serving: every patient once per epoch, and no device copy where none is needed."""

import torch

from patientcnn.data.batches import TensorBatches, to_device_if_fits


def test_shuffled_batches_cover_every_patient_once_and_keep_rows_together():
    x = torch.arange(10, dtype=torch.float32)[:, None, None].expand(10, 2, 3).contiguous()
    y = torch.arange(10, dtype=torch.float32)
    batches = TensorBatches((x, y), batch_size=4, shuffle=True, seed=0)
    served = list(batches)
    assert len(batches) == len(served) == 3
    seen = torch.cat([b[1] for b in served])
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))  # shuffled
    for bx, by in served:
        assert torch.equal(bx[:, 0, 0], by)  # x and y rows stay paired


def test_two_epochs_are_shuffled_differently():
    y = torch.arange(50, dtype=torch.float32)
    batches = TensorBatches((y,), batch_size=50, shuffle=True, seed=0)
    first, second = (next(iter(batches))[0] for _ in range(2))
    assert not torch.equal(first, second)


def test_cpu_training_keeps_the_tensors_without_copying():
    tensors = (torch.zeros(4, 2, 3), torch.ones(4))
    placed = to_device_if_fits(tensors, torch.device("cpu"))
    assert all(a is b for a, b in zip(placed, tensors, strict=True))
