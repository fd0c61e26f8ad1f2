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


def test_shards_follow_the_distributed_sampler_rule():
    """Training: one permutation per epoch shared by the processes, every n-th patient
    each, padded with the first ones to equal shards; evaluation: no padding."""
    y = torch.arange(10, dtype=torch.float32)
    train = [
        TensorBatches((y,), 2, shuffle=True, seed=3, rank=r, world_size=3, even=True)
        for r in range(3)
    ]
    served = [torch.cat([b[0] for b in batches]).tolist() for batches in train]
    assert [len(s) for s in served] == [4, 4, 4] and all(len(b) == 2 for b in train)
    everything = served[0] + served[1] + served[2]
    assert sorted(set(everything)) == list(range(10))  # every patient; two served twice
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    padded = order + order[:2]
    assert served == [padded[r::3] for r in range(3)]
    evaluation = [TensorBatches((y,), 4, rank=r, world_size=3) for r in range(3)]
    shards = [torch.cat([b[0] for b in batches]).tolist() for batches in evaluation]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]  # each patient once
    assert [len(b) for b in evaluation] == [1, 1, 1]
