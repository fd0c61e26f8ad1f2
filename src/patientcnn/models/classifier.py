"""The one LightningModule: any registered network + weighted BCE + AdamW + a schedule.

The network is chosen by its registry name (``net``) and built from the remaining
settings, so every family trains, validates and is checkpointed the same way. Metrics
come from ``patientcnn.metrics``; the schedule is a linear warm-up followed by a cosine
decay over the run's optimizer steps (``trainer.max_steps``, set by the recipe).
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torchmetrics import MeanMetric

from patientcnn.errors import UserError
from patientcnn.metrics import classification_metrics
from patientcnn.models.layers import precise_norm_statistics, true_or_false, valid_interval
from patientcnn.models.registry import closed_form_names, create_network, network_config

SCHEDULERS = ("none", "cosine", "plateau")


class Classifier(pl.LightningModule):
    """Binary outcome classifier; every constructor argument is a plain hyperparameter.

    ``pos_weight`` scales the loss of positive patients (the train task sets it to the
    negatives-per-positive ratio when the config says 'auto'), so a rare outcome is not
    ignored. ``**net_config`` are the network family's own settings (see its module),
    ``static_features`` among them when the cohort has static covariates. Batches are
    ``(x, valid, y, static)`` (``static`` (N, 0) without covariates) or ``(x, valid, y)``.
    ``mixup``, ``crop`` and ``jitter`` vary the training batches (``augment``); all are off
    by default, because none gained out of fold (docs/DEFAULTS.md, twelfth round).
    ``precise_bn``: before every validation, and at the end of training, BatchNorm's
    statistics are recomputed for the current weights over the training patients
    (``layers.precise_norm_statistics``), so that what is validated and kept is exact.
    """

    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        net: str = "cnn",
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        scheduler: str = "cosine",
        warmup: float = 0.05,
        pos_weight: float = 1.0,
        mixup: float = 0.0,
        crop: float = 0.0,
        jitter: float = 0.0,
        precise_bn: bool = False,
        **net_config,
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
        if not (isinstance(warmup, (int, float)) and 0 <= warmup < 1):
            raise UserError(f"model.warmup must be a fraction in [0, 1), got {warmup!r}")
        for name, value in (("mixup", mixup), ("crop", crop), ("jitter", jitter)):
            if not isinstance(value, (int, float)) or value < 0 or (name == "crop" and value >= 1):
                bound = "a fraction in [0, 1)" if name == "crop" else "a number >= 0"
                raise UserError(f"model.{name} must be {bound} (0: off), got {value!r}")
        true_or_false("precise_bn", precise_bn)
        if net in closed_form_names():
            raise UserError(
                f"model.net={net} has no kernels to train by gradient: it is fitted in closed "
                f"form as a partner of the trained networks (partner.nets=[{net}, ...]; README 'The partners')"
            )
        self.save_hyperparameters()
        self.net = create_network(net, in_channels, seq_len, **net_config)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)
        self.val_metrics = classification_metrics("val/")
        self.test_metrics = classification_metrics("test/")
        # the epoch's loss, the mean over its patients: under DDP the sum and the count are
        # added up over the processes' shards (Lightning's own sync_dist mean rounds the
        # summed batch sizes of uneven shards to an integer and gets it wrong)
        self.val_loss = MeanMetric(nan_strategy="disable")  # a NaN loss must show
        self.test_loss = MeanMetric(nan_strategy="disable")
        self.train_loss_sum = torch.zeros(())  # reset on the model's device every epoch
        self.train_count = 0
        self.first_bad_step = torch.full((), -1)  # a run resumed mid-epoch skips the reset
        self.first_bad_loss = torch.zeros(())

    def network_spec(self) -> dict:
        """What a bundle stores to rebuild the network: registry name and plain settings."""
        name, config = network_config(dict(self.hparams))
        return {"name": name, "config": config}

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(x, valid, static)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            logits.float(), y, pos_weight=self.pos_weight, reduction=reduction
        )

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
        x, valid, y, static = unpack(batch)
        x, valid, y, static = augment(
            x, valid, y, static, self.hparams.mixup, self.hparams.crop, self.hparams.jitter
        )
        loss = self._loss(self(x, valid, static), y)
        self.train_loss_sum += loss.detach() * len(y)
        self.train_count += len(y)
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)  # no host sync
        self.first_bad_step = torch.where(bad, self.global_step, self.first_bad_step)
        self.first_bad_loss = torch.where(bad, loss.detach(), self.first_bad_loss)
        return loss

    def on_validation_start(self) -> None:
        """Validation (and the checkpoints saved after it) sees the current weights with
        statistics of their own, not the running averages of past steps' batches."""
        if self.hparams.precise_bn and self.trainer.state.fn == TrainerFn.FITTING:
            self._precise_statistics()

    def on_train_end(self) -> None:
        """A run without validation (a refit) ends with precise statistics too."""
        if self.hparams.precise_bn:
            self._precise_statistics()

    def _precise_statistics(self) -> None:
        """Over the datamodule's training split (``PatientDataModule.tensors['train']``);
        changes no weight and draws no random number, so training goes on as without."""
        tensors = getattr(getattr(self.trainer, "datamodule", None), "tensors", {}).get("train")
        if tensors is not None:
            x, valid, _, static = unpack(tensors)
            precise_norm_statistics(self.net, x, valid, static, self.device)

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
        if self.train_count:  # the mean over every process's shard (DDP)
            loss = self.train_loss_sum / self.train_count
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)

    def _evaluate(self, batch: tuple[torch.Tensor, ...], metrics, loss, stage: str) -> None:
        x, valid, y, static = unpack(batch)
        logits = self(x, valid, static)
        loss.update(self._loss(logits, y, reduction="none"))  # one value per patient
        metrics.update(torch.sigmoid(logits.float()), y.int())

    def _log_epoch(self, metrics, loss, stage: str) -> None:
        """The epoch's figures over every patient of the split, each counted once: under
        DDP torchmetrics gathers every process's shard before computing, so all processes
        log (and checkpoint and stop on) the same values."""
        values = metrics.compute()
        self.log(f"{stage}/loss", loss.compute(), prog_bar=stage == "val")
        self.log(f"{stage}/auroc", values.pop(f"{stage}/auroc"), prog_bar=stage == "val")
        self.log_dict(values)
        metrics.reset()
        loss.reset()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_loss, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, self.val_loss, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_loss, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, self.test_loss, "test")

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.scheduler == "cosine":
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, warmup_cosine(total, self.hparams.warmup)
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"},
            }
        if self.hparams.scheduler == "plateau":
            schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=3)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "monitor": "val/loss"},
            }
        return {"optimizer": optimizer}


def augment(
    x: torch.Tensor,
    valid: torch.Tensor,
    y: torch.Tensor,
    static: torch.Tensor | None,
    mixup: float = 0.0,
    crop: float = 0.0,
    jitter: float = 0.0,
) -> tuple[torch.Tensor, ...]:
    """A training batch, varied so that a few dozen patients look like more (all off at 0).

    - ``jitter``: Gaussian noise of that standard deviation (in standardised units) on the
      observed steps;
    - ``crop``: each patient keeps a random window of (1 - crop) of its own steps; the rest
      becomes padding, which every family masks, so the network sees a shorter series;
    - ``mixup``: each patient is mixed with another of the batch, series, static
      covariates and outcome alike, with a Beta(mixup, mixup) share (Zhang et al. 2018);
      a step is observed where either patient's is.
    """
    if jitter > 0:
        x = x + jitter * torch.randn_like(x) * valid.unsqueeze(1).to(x.dtype)
    if crop > 0:
        start, end = valid_interval(valid)
        length = end - start
        keep = torch.clamp(torch.round(length.float() * (1 - crop)).long(), min=1)
        offset = start + (torch.rand(len(x), device=x.device) * (length - keep + 1)).long()
        steps = torch.arange(valid.shape[1], device=x.device)
        window = (steps >= offset[:, None]) & (steps < (offset + keep)[:, None])
        valid = valid & window
        x = x * valid.unsqueeze(1).to(x.dtype)
    if mixup > 0 and len(x) > 1:
        share = torch.distributions.Beta(mixup, mixup).sample((len(x),)).to(x.device, x.dtype)
        other = torch.randperm(len(x), device=x.device)
        x = share[:, None, None] * x + (1 - share[:, None, None]) * x[other]
        valid = valid | valid[other]
        y = share * y + (1 - share) * y[other]
        if static is not None and static.shape[1] > 0:
            static = share[:, None] * static + (1 - share[:, None]) * static[other]
    return x, valid, y, static


def unpack(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``(x, valid, y, static)`` of a batch; a batch of three (no static covariates)
    gets ``static=None``."""
    x, valid, y, *rest = batch
    return x, valid, y, (rest[0] if rest else None)


def warmup_cosine(total_steps: int, warmup: float):
    """Learning-rate factor per step: linear from ~0 to 1 over the warm-up share of the
    steps, then a cosine down to 1 % of the peak at the last step."""
    warm = max(1, int(round(warmup * total_steps)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
