"""Every registered network family: shapes, padding invariance, masked batch statistics."""

import pytest
import torch

from patientcnn.models.layers import (
    PIECE_MIN_CHANNELS,
    PIECE_TAPS,
    MaskedBatchNorm1d,
    SameConv1d,
    format_shape_table,
    masked_max_pool,
)
from patientcnn.models.registry import closed_form_names, create_network, network_names

SMALL = {
    "cnn": {"channels": [8, 8], "kernel_size": 3, "dilation": [1, 2]},
    "resnet": {"channels": [8, 16]},
    "inceptiontime": {"depth": 3, "width": 4, "bottleneck": 4, "kernel_size": 10},
    "tcn": {"depth": 3, "width": 8},
}


def test_the_registry_lists_the_four_trained_families_and_the_partners():
    # the closed-form partners: tests/test_rocket.py, tests/test_summary.py, tests/test_linear.py
    assert network_names() == sorted([*SMALL, "linear", "rocket", "summary"])
    assert closed_form_names() == ["linear", "rocket", "summary"]


@pytest.mark.parametrize("family", sorted(SMALL))
def test_shape_table_describes_every_block(family):
    net = create_network(family, 3, 40, **SMALL[family])
    rows = net.shape_table()
    assert rows and rows[0]["in_channels"] == 3 and rows[-1]["length_out"] == 40
    assert sum(r["params"] for r in rows) <= sum(p.numel() for p in net.parameters())
    text = format_shape_table(rows)
    assert "receptive field" in text and f"(N, {rows[-1]['out_channels']}, 40)" in text
    fields = [r["receptive_field"] for r in rows]
    assert fields == sorted(fields) and fields[-1] > fields[0]


@pytest.mark.parametrize("family", sorted(SMALL))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_more_padding_changes_no_prediction(family, mode):
    """The same patients padded to 40 or 70 steps, or alone at their own length, give the
    same logits; in training mode too, so padding never enters the batch statistics."""
    torch.manual_seed(0)
    short = create_network(family, 3, 40, **SMALL[family])
    longer = create_network(family, 3, 70, **SMALL[family])
    for net in (short, longer):  # dropout off: the comparison is deterministic
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    x = torch.randn(4, 3, 40)
    valid = torch.ones(4, 40, dtype=torch.bool)
    valid[1, 25:] = False
    valid[3, 9:] = False
    short.train()
    for _ in range(3):  # non-trivial running statistics
        short(x * 2 + 1, valid)
    longer.load_state_dict(short.state_dict())
    getattr(short, mode)()
    getattr(longer, mode)()
    x_long = torch.cat([x, torch.randn(4, 3, 30)], dim=2)  # garbage in the padded steps
    valid_long = torch.cat([valid, torch.zeros(4, 30, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a = short(x, valid)
        b = longer(x_long, valid_long)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    if mode == "eval":
        alone = short(x[1:2, :, :25], valid[1:2, :25])
        torch.testing.assert_close(alone, a[1:2], atol=1e-5, rtol=0)
    assert a.std() > 1e-4  # the patients really differ


@pytest.mark.parametrize("family", sorted(SMALL))
def test_a_downsampled_network_ignores_padding_on_either_side(family):
    """Windows of 4 steps count from each patient's first real step, so padding before
    (align=end grids) or after the series, or none, gives the same logit."""
    torch.manual_seed(0)
    net = create_network(family, 3, 40, downsample=4, **SMALL[family]).eval()
    x = torch.randn(2, 3, 40)
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[1, 25:] = False
    before = torch.cat([torch.randn(1, 3, 15), x[1:2, :, :25]], dim=2)
    valid_before = torch.arange(40).unsqueeze(0) >= 15
    with torch.no_grad():
        a = net(x, valid)
        torch.testing.assert_close(net(before, valid_before), a[1:2], atol=1e-5, rtol=0)
        torch.testing.assert_close(net(x[1:2, :, :25], valid[1:2, :25]), a[1:2], atol=1e-5, rtol=0)
    rows = net.shape_table()
    assert rows[0]["layer"] == "downsample" and rows[0]["length_out"] == 10
    assert rows[1]["length_in"] == 10


def test_training_max_pool_matches_max_pool1d_in_values_and_gradients():
    x = torch.randn(3, 4, 50).round()  # rounded: many ties, broken as max_pool1d does
    mask = torch.ones(3, 1, 50, dtype=torch.bool)
    mask[0, :, 30:] = False
    weights = torch.randn(3, 4, 50)
    grads = []
    for training in (False, True):
        leaf = x.clone().requires_grad_()
        out = masked_max_pool(leaf, mask, training=training)
        (out * weights).sum().backward()
        grads.append((out.detach(), leaf.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=0, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "taps, dilation, stride, groups, bias",
    [
        (PIECE_TAPS + 1, 1, 1, 1, False),
        (19, 1, 1, 1, False),
        (40, 2, 1, 2, True),
        (27, 3, 2, 1, True),
    ],
)
def test_a_long_kernel_trained_in_pieces_gives_the_one_convolutions_values_and_gradients(
    taps, dilation, stride, groups, bias
):
    channels = PIECE_MIN_CHANNELS * groups
    conv = SameConv1d(channels, 6, taps, dilation=dilation, stride=stride, groups=groups, bias=bias)
    x = torch.randn(3, channels, 90, dtype=torch.float64)
    weights = torch.randn(3, 6, 90 // stride + 1, dtype=torch.float64)
    conv = conv.double()
    runs = []
    for training in (False, True):  # evaluation: the one convolution; training: pieces
        conv.train(training)
        conv.zero_grad()
        leaf = x.clone().requires_grad_()
        out = conv(leaf)
        (out * weights[..., : out.shape[2]]).sum().backward()
        runs.append((out.detach(), leaf.grad, conv.weight.grad.clone()))
    assert runs[1][0].shape == runs[0][0].shape
    for one, pieces in zip(runs[0], runs[1], strict=True):
        torch.testing.assert_close(pieces, one, rtol=1e-12, atol=1e-12)


def test_inception_skips_the_masks_of_an_unpadded_batch_with_the_same_result():
    torch.manual_seed(0)
    net = create_network("inceptiontime", 3, 40, **SMALL["inceptiontime"]).train()
    x = torch.randn(4, 3, 40)
    valid = torch.ones(4, 40, dtype=torch.bool)
    fast = net(x, valid)
    masked = net._forward(x, valid.unsqueeze(1))
    torch.testing.assert_close(fast, masked, atol=1e-5, rtol=0)


def test_masked_batch_norm_counts_real_steps_only():
    bn = MaskedBatchNorm1d(2, momentum=1.0)
    x = torch.randn(3, 2, 10)
    mask = torch.ones(3, 1, 10, dtype=torch.bool)
    mask[0, :, 6:] = False
    x_padded = x.masked_fill(~mask, 100.0)
    bn.train()(x_padded, mask)
    real = x.permute(1, 0, 2)[:, mask[:, 0, :]]  # (C, real steps)
    torch.testing.assert_close(bn.running_mean, real.mean(dim=1))
    torch.testing.assert_close(bn.running_var, real.var(dim=1, unbiased=True))
