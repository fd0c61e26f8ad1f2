"""The LightningModule: the epoch loss is logged once and is the true mean; training-batch
variation (mixup, crop, jitter) is off by default and keeps padding padding."""

import pytorch_lightning as pl
import torch

from patientcnn.data.batches import TensorBatches
from patientcnn.errors import UserError
from patientcnn.models.classifier import Classifier, augment


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses, self.sizes = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(len(batch[2]))


def quiet_trainer(**settings) -> pl.Trainer:
    """A CPU trainer that trains only: no validation, logger, checkpoints or bars."""
    return pl.Trainer(
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


def test_epoch_train_loss_is_the_patient_weighted_mean_of_the_steps():
    torch.manual_seed(0)
    n, channels, length = 40, 3, 8
    tensors = (
        torch.randn(n, channels, length),
        torch.ones(n, length, dtype=torch.bool),
        (torch.rand(n) < 0.5).float(),
    )
    model = Classifier(channels, length, net="cnn", channels=[4], dropout=0.0, scheduler="none")
    steps = StepLosses()
    trainer = quiet_trainer(max_epochs=1, callbacks=[steps])
    trainer.fit(model, train_dataloaders=TensorBatches(tensors, batch_size=16))
    assert steps.sizes == [16, 16, 8]
    expected = sum(loss * size for loss, size in zip(steps.losses, steps.sizes, strict=True)) / n
    assert abs(float(trainer.callback_metrics["train/loss"]) - expected) < 1e-5


def _padded_batch(n=6, channels=2, length=20):
    torch.manual_seed(1)
    x = torch.randn(n, channels, length)
    valid = torch.ones(n, length, dtype=torch.bool)
    valid[0, 15:] = False  # a short patient, padded at the end
    valid[1, :4] = False  # one padded at the start
    x = x * valid.unsqueeze(1)
    return x, valid, (torch.arange(n) % 2).float()


def test_augment_off_changes_nothing():
    x, valid, y = _padded_batch()
    out = augment(x, valid, y, None)
    assert out[0] is x and out[1] is valid and out[2] is y and out[3] is None


def test_crop_keeps_a_window_of_each_patients_own_steps():
    x, valid, y = _padded_batch()
    x2, valid2, y2, _ = augment(x, valid, y, None, crop=0.25)
    own = valid.sum(dim=1)
    kept = valid2.sum(dim=1)
    assert torch.equal(kept, torch.round(own.float() * 0.75).long())
    assert not (valid2 & ~valid).any()  # never a padded step made observed
    for row in valid2:  # one contiguous window
        steps = torch.nonzero(row).flatten()
        assert int(steps[-1] - steps[0]) + 1 == len(steps)
    assert torch.equal(x2, x * valid2.unsqueeze(1))  # cropped steps are padding (zero)
    assert torch.equal(y2, y)


def test_jitter_moves_observed_steps_only():
    x, valid, y = _padded_batch()
    x2, valid2, _, _ = augment(x, valid, y, None, jitter=0.1)
    moved = (x2 != x).any(dim=1)
    assert torch.equal(moved, valid) and torch.equal(valid2, valid)


def test_mixup_mixes_outcomes_with_the_series():
    x, valid, y = _padded_batch(n=8)
    static = torch.randn(8, 3)
    torch.manual_seed(3)
    x2, valid2, y2, static2 = augment(x, valid, y, static, mixup=0.4)
    assert ((y2 >= 0) & (y2 <= 1)).all() and not torch.equal(y2, y)
    assert not torch.equal(static2, static)
    assert (valid2 | ~valid).all()  # a step observed before stays observed
    # the share that mixed the outcome mixed the series: solve it back from y where y differs
    torch.manual_seed(3)
    share = torch.distributions.Beta(0.4, 0.4).sample((8,))
    other = torch.randperm(8)
    expected = share[:, None, None] * x + (1 - share[:, None, None]) * x[other]
    assert torch.allclose(x2, expected)


def test_augmentation_settings_are_checked():
    for bad in ({"crop": 1.0}, {"mixup": -0.1}, {"jitter": "a"}):
        try:
            Classifier(2, 20, net="cnn", channels=[4], **bad)
        except UserError as err:
            assert f"model.{next(iter(bad))}" in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_a_run_with_every_augmentation_trains_and_stays_finite():
    x, valid, y = _padded_batch(n=16)
    model = Classifier(
        2,
        20,
        net="inceptiontime",
        depth=3,
        width=4,
        bottleneck=4,
        kernel_size=5,
        scheduler="none",
        mixup=0.2,
        crop=0.1,
        jitter=0.1,
    )
    trainer = quiet_trainer(max_steps=4)
    trainer.fit(model, train_dataloaders=TensorBatches((x, valid, y), batch_size=8))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
