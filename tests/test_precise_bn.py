"""Precise BatchNorm statistics (``model.precise_bn``): recomputed for the weights being
validated over the training patients (padding and dropout not counted), without
touching a weight or the training trajectory."""

import pytorch_lightning as pl
import torch

from patientcnn.data.batches import TensorBatches
from patientcnn.models.classifier import Classifier
from patientcnn.models.layers import precise_norm_statistics


def _cohort(n=12, channels=2, length=20, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, channels, length)
    valid = torch.ones(n, length, dtype=torch.bool)
    valid[0, 12:] = False  # padded at the end
    valid[3, :5] = False  # padded at the start
    x = x * valid.unsqueeze(1)
    return x, valid, (torch.arange(n) % 2).float(), torch.zeros(n, 0)


def _net(channels=2, length=20, dropout=0.3):
    torch.manual_seed(1)
    model = Classifier(channels, length, net="cnn", channels=[6, 6], dropout=dropout)
    return model.net


def _stale(net, x, valid):
    """Running statistics of other inputs than ``x``: a few training-mode passes."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(3 * x + 2, valid, None)
    net.eval()


def _norms(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]


def test_eval_output_equals_the_batch_statistics_output_after_precise_statistics():
    x, valid, _, _ = _cohort()
    net = _net(dropout=0.0)
    _stale(net, x, valid)
    net.train()
    with torch.no_grad():
        truth = net(x, valid, None)  # statistics of these very patients, real steps only
    net.eval()
    with torch.no_grad():
        stale = net(x, valid, None)
    assert not torch.allclose(stale, truth, atol=1e-2)
    precise_norm_statistics(net, x, valid, batch_size=len(x))
    with torch.no_grad():
        precise = net(x, valid, None)
    # equal but for the unbiased variance (count / (count - 1), about 230 real steps)
    assert torch.allclose(precise, truth, atol=2e-2)
    assert (precise - truth).abs().max() < 0.1 * (stale - truth).abs().max()


def test_batches_average_to_the_statistics_and_change_no_weight_or_mode():
    x, valid, _, _ = _cohort()
    net = _net()
    _stale(net, x, valid)
    weights = {k: v.clone() for k, v in net.named_parameters()}
    precise_norm_statistics(net, x, valid, batch_size=len(x))
    one_batch = [m.running_mean.clone() for m in _norms(net)]
    _stale(net, x, valid)
    precise_norm_statistics(net, x, valid, batch_size=4)  # three batches, averaged
    first = _norms(net)[0]
    # the first norm's input does not depend on other norms: the batches' mean of means
    # is the mean of the patients' real steps up to the batches' unequal step counts
    assert torch.allclose(first.running_mean, one_batch[0], atol=0.05)
    assert all(m.momentum == 0.1 and not m.training for m in _norms(net))
    assert not any(m.training for m in net.modules())  # dropout too stays in eval
    for k, v in net.named_parameters():
        assert torch.equal(v, weights[k])


def test_statistics_ignore_padded_steps():
    x, valid, _, _ = _cohort()
    net = _net(dropout=0.0)
    precise_norm_statistics(net, x, valid, batch_size=len(x))
    reference = [m.running_mean.clone() for m in _norms(net)]
    noisy = x + 100.0 * (~valid).unsqueeze(1)  # garbage where the steps are padding
    precise_norm_statistics(net, noisy, valid, batch_size=len(x))
    for before, m in zip(reference, _norms(net), strict=True):
        assert torch.allclose(before, m.running_mean, atol=1e-5)


class _Cohort(pl.LightningDataModule):
    def __init__(self, train, val):
        super().__init__()
        self.tensors = {"train": train, "val": val}

    def train_dataloader(self):
        return TensorBatches(self.tensors["train"], batch_size=4, shuffle=True, seed=0)

    def val_dataloader(self):
        return TensorBatches(self.tensors["val"], batch_size=8)


class _Validated(pl.Callback):
    """The first norm's running mean as each validation saw it."""

    def __init__(self):
        self.means = []

    def on_validation_end(self, trainer, module):
        self.means.append(_norms(module.net)[0].running_mean.clone())


def _fit(precise: bool, max_steps=12):
    train, val = _cohort(12, seed=0), _cohort(8, seed=1)
    pl.seed_everything(0, verbose=False)
    model = Classifier(2, 20, net="cnn", channels=[6, 6], dropout=0.1, precise_bn=precise)
    seen = _Validated()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[seen],
    )
    trainer.fit(model, datamodule=_Cohort(train, val))
    return model.net, train, seen.means


def test_training_takes_the_same_steps_and_validates_precise_statistics():
    plain, _, plain_seen = _fit(precise=False)
    precise, (x, valid, _, static), seen = _fit(precise=True)
    assert len(seen) == len(plain_seen) == 4
    for (name, a), b in zip(plain.named_parameters(), precise.parameters(), strict=True):
        assert torch.equal(a, b), name  # no weight, no random draw changed
    assert not torch.allclose(seen[-1], plain_seen[-1])
    after_fit = [m.running_mean.clone() for m in _norms(precise)]
    precise_norm_statistics(precise, x, valid, static)  # what validation and the end saw
    for before, m in zip(after_fit, _norms(precise), strict=True):
        assert torch.allclose(before, m.running_mean, atol=1e-6)
    assert torch.allclose(seen[-1], after_fit[0], atol=1e-6)  # the last validation: step 12


def test_off_by_default():
    assert Classifier(2, 20, net="cnn", channels=[6]).hparams.precise_bn is False


def test_precise_bn_must_be_a_boolean():
    import pytest

    from patientcnn.errors import UserError

    with pytest.raises(UserError, match="precise_bn"):
        Classifier(2, 20, net="cnn", channels=[6], precise_bn="yes")
