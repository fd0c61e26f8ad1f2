import itertools

import pytest
import torch
from torch import nn

from patientcnn.errors import UserError
from patientcnn.models.conv import ConvNet, check_fits, layer_specs


@pytest.mark.parametrize(
    "kernel,stride,dilation,padding",
    list(itertools.product([1, 2, 3, 5], [1, 2, 3], [1, 2, 4], [0, 1, 3, "same", "valid"])),
)
def test_output_length_matches_torch(kernel, stride, dilation, padding):
    length = 49
    spec = layer_specs(5, [8], kernel, stride, dilation, padding)[0]
    span = dilation * (kernel - 1) + 1
    if length + spec.pad_left + spec.pad_right < span:
        with pytest.raises(UserError):
            check_fits([spec], length)
        return
    x = torch.zeros(2, 5, length)
    x = nn.functional.pad(x, (spec.pad_left, spec.pad_right))
    out = nn.Conv1d(5, 8, kernel, stride=stride, dilation=dilation)(x)
    assert out.shape[-1] == spec.output_length(length)
    if padding == "same":
        assert spec.output_length(length) == -(-length // stride)  # ceil(L / stride)


def test_net_reports_the_shapes_it_produces():
    net = ConvNet(
        5,
        49,
        [5, 16, 32],
        kernel_size=[7, 5, 3],
        stride=[1, 2, 1],
        dilation=[1, 2, 1],
        padding=0,
        groups=[5, 1, 1],
    )
    table = net.shape_table()
    x, valid = torch.randn(3, 5, 49), torch.ones(3, 49, dtype=torch.bool)
    h, start, end = x, torch.zeros(3, dtype=torch.long), torch.full((3,), 49)
    for block, row in zip(net.blocks, table, strict=True):
        h, start, end = block(h, start, end)
        assert h.shape == (3, row["out_channels"], row["length_out"])
        assert end.tolist() == [row["length_out"]] * 3
    assert [r["receptive_field"] for r in table] == [7, 7 + 4 * 2, 15 + 2 * 2]
    assert net(x, valid).shape == (3,)
    assert table[0]["params"] == 5 * 1 * 7 + 2 * 5  # depthwise conv + batch norm


def test_stack_that_does_not_fit_names_the_layer():
    with pytest.raises(
        UserError,
        match=r"layer 3 .*spans 13 steps but receives only 12 \(sequence length 24 -> 20 -> 12\)",
    ):
        ConvNet(5, 24, [8, 8, 8], kernel_size=[5, 5, 13], padding="valid", dilation=[1, 2, 1])


def test_groups_must_divide_channels():
    with pytest.raises(UserError, match="layer 2: groups=5"):
        ConvNet(5, 24, [5, 32], groups=5)


def test_list_length_must_match_depth():
    with pytest.raises(UserError, match="model.kernel_size lists 2"):
        ConvNet(5, 24, [8, 8, 8], kernel_size=[3, 3])


@pytest.mark.parametrize(
    "stride,padding,norm",
    [(1, "same", "batch"), (2, "same", "layer"), (2, 0, "none"), (3, 2, "batch")],
)
def test_prediction_ignores_padding_after_the_stay(stride, padding, norm):
    torch.manual_seed(0)
    net = ConvNet(
        3,
        60,
        [8, 8, 8],
        kernel_size=[3, 4, 3],
        stride=[1, stride, 1],
        dilation=[1, 2, 1],
        padding=padding,
        norm=norm,
    ).eval()
    for m in net.modules():  # non-trivial norm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(1, 3, 20)
    alone = net(x, torch.ones(1, 20, dtype=torch.bool))
    for extra in (1, 7, 40):
        padded = torch.cat([x, torch.zeros(1, 3, extra)], dim=2)
        valid = torch.arange(20 + extra)[None, :] < 20
        assert torch.allclose(alone, net(padded, valid), atol=1e-5), extra


def test_prediction_ignores_padding_before_the_stay_at_stride_one():
    torch.manual_seed(1)
    net = ConvNet(3, 50, [8, 8], kernel_size=5, dilation=[1, 3]).eval()
    x = torch.randn(1, 3, 20)
    alone = net(x, torch.ones(1, 20, dtype=torch.bool))
    padded = torch.cat([torch.zeros(1, 3, 30), x], dim=2)
    assert torch.allclose(alone, net(padded, torch.arange(50)[None, :] >= 30), atol=1e-5)
