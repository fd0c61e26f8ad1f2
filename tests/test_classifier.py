"""The LightningModule's training loop: the epoch loss is logged once and is the true mean."""

import pytorch_lightning as pl
import torch

from patientcnn.data.batches import TensorBatches
from patientcnn.models.classifier import Classifier


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses, self.sizes = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(len(batch[2]))


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
    trainer = pl.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[steps],
    )
    trainer.fit(model, train_dataloaders=TensorBatches(tensors, batch_size=16))
    assert steps.sizes == [16, 16, 8]
    expected = sum(loss * size for loss, size in zip(steps.losses, steps.sizes, strict=True)) / n
    assert abs(float(trainer.callback_metrics["train/loss"]) - expected) < 1e-5
