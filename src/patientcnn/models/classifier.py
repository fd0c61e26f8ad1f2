"""The LightningModule: ConvNet + weighted BCE + AdamW + clinical classification metrics."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
)

from patientcnn.errors import UserError
from patientcnn.models.conv import ConvNet

SCHEDULERS = ("none", "cosine", "plateau")


def classification_metrics(prefix: str) -> MetricCollection:
    """AUROC, AUPRC (average precision), accuracy and F1 at 0.5, and the Brier score."""
    return MetricCollection(
        {
            "auroc": BinaryAUROC(),
            "auprc": BinaryAveragePrecision(),
            "accuracy": BinaryAccuracy(),
            "f1": BinaryF1Score(),
            "brier": MeanSquaredError(),
        },
        prefix=prefix,
    )


def layer_widths(channels: list[int] | None, depth: int | None, width: int | None) -> list[int]:
    """``channels``, or ``[width] * depth`` when it is null: two numbers a sweep can search."""
    if channels is not None:
        if depth is not None or width is not None:
            raise UserError(
                "set either model.channels or model.depth and model.width "
                "(with model.channels=null), not both"
            )
        return list(channels)
    if not (isinstance(depth, int) and isinstance(width, int) and depth >= 1 and width >= 1):
        raise UserError(
            f"with model.channels=null, model.depth and model.width must be positive integers, "
            f"got depth={depth!r}, width={width!r}"
        )
    return [width] * depth


class CNNClassifier(pl.LightningModule):
    """Binary outcome classifier; every constructor argument is a plain hyperparameter.

    ``pos_weight`` scales the loss of positive patients (the train task sets it to the
    negatives-per-positive ratio when the config says 'auto'), so a rare outcome is not
    ignored.
    """

    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        channels: list[int] | None = (32, 64, 64),
        kernel_size: int | list[int] = 5,
        stride: int | list[int] = 1,
        dilation: int | list[int] = 1,
        padding: int | str | list[int | str] = "same",
        groups: int | list[int] = 1,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.1,
        pooling: str = "avgmax",
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        scheduler: str = "cosine",
        pos_weight: float = 1.0,
        depth: int | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise UserError(
                f"model.scheduler must be one of {', '.join(SCHEDULERS)}; got {scheduler!r}"
            )
        if not isinstance(pos_weight, (int, float)) or pos_weight <= 0:
            raise UserError(
                f"model.pos_weight must be 'auto' or a positive number, got {pos_weight!r}"
            )
        self.save_hyperparameters()
        self.net = ConvNet(
            in_channels,
            seq_len,
            layer_widths(channels, depth, width),
            kernel_size,
            stride,
            dilation,
            padding,
            groups,
            norm,
            activation,
            dropout,
            pooling,
        )
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)
        self.val_metrics = classification_metrics("val/")
        self.test_metrics = classification_metrics("test/")
        self.train_loss_sum = torch.zeros(())  # reset on the model's device every epoch
        self.train_count = 0

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.net(x, valid)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)

    def on_train_epoch_start(self) -> None:
        self.train_loss_sum = torch.zeros((), device=self.device)
        self.train_count = 0
        self.first_bad_step = torch.full((), -1, device=self.device)  # first non-finite loss
        self.first_bad_loss = torch.zeros((), device=self.device)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Forward and loss only; the epoch's mean loss is kept on the device, not logged here.

        ``self.log`` in every step costs Lightning bookkeeping per step (about half of the
        Python calls it makes per step, see docs/BENCHMARKS.md); one sum on the device and
        one ``self.log`` per epoch give the same value without a host sync.
        """
        x, valid, y = batch
        loss = self._loss(self(x, valid), y)
        self.train_loss_sum += loss.detach() * len(y)
        self.train_count += len(y)
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)  # no host sync
        self.first_bad_step = torch.where(bad, self.global_step, self.first_bad_step)
        self.first_bad_loss = torch.where(bad, loss.detach(), self.first_bad_loss)
        return loss

    def on_train_epoch_end(self) -> None:
        """Stop on a non-finite loss (one check per epoch): further epochs train on NaN."""
        step = int(self.first_bad_step)
        if step >= 0:
            raise UserError(
                f"the training loss became {float(self.first_bad_loss)} at epoch "
                f"{self.current_epoch}, step "
                f"{step}; lower model.lr, use trainer.precision=32-true, or check the inputs "
                "for extreme values"
            )
        if self.train_count:
            self.log("train/loss", self.train_loss_sum / self.train_count, prog_bar=True)

    def _evaluate(
        self, batch: tuple[torch.Tensor, ...], metrics: MetricCollection, stage: str
    ) -> None:
        x, valid, y = batch
        logits = self(x, valid)
        self.log(f"{stage}/loss", self._loss(logits, y), prog_bar=stage == "val", batch_size=len(y))
        metrics.update(torch.sigmoid(logits.float()), y.int())

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log("val/auroc", values.pop("val/auroc"), prog_bar=True)
        self.log_dict(values)
        self.val_metrics.reset()

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.scheduler == "cosine":
            max_epochs = max(int(self.trainer.max_epochs or 1), 1)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
            return {"optimizer": optimizer, "lr_scheduler": schedule}
        if self.hparams.scheduler == "plateau":
            schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=3)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "monitor": "val/auroc"},
            }
        return {"optimizer": optimizer}
