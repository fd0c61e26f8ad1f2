"""Random convolution kernels with a linear readout, "rocket" in the registry.

MiniRocket (Dempster, Schmidt and Webb 2021) showed that a 1D-CNN need not learn its
kernels: a large fixed bank of short dilated kernels, each output summarised by the
proportion of steps where it exceeds a bias (PPV), and a ridge regression on those
summaries classify time series about as well as trained deep networks, in seconds and
with no gradient steps. That makes it the natural partner of a trained network on small
cohorts, where a trained network has few patients to learn its kernels from.

The network here:

- 84 kernels of 9 taps (weight 2 at three taps, -1 at the other six, so every kernel
  sums to 0 and ignores the series' level), each at dilations 1, 2, 4, ... spread up to
  the series length (at most ``max_dilations`` of them); with several input channels
  each kernel reads a random subset of them (summed);
- for every kernel and dilation a few biases, the quantiles of that kernel's output on
  a random training patient (fitted by ``fit``, stored as buffers);
- features: the share of a patient's real steps whose output exceeds each bias; half of
  the kernels ('same' zero padding) count every real step, the other half only the steps
  whose taps all lie on real steps. Padded steps are zeroed and never counted, so the
  padding around a patient never changes the patient's features;
- with ``first_difference`` (MultiRocket, Tan et al. 2022), half of the summaries read
  the series' step-to-step changes instead (real where both steps are real), with
  biases of their own: how fast a series moves, apart from where it is. On the
  out-of-fold patients of 14 quality sets this lowered the partner's log loss from 0.306
  to 0.292 at the same number of summaries (docs/DEFAULTS.md);
- with ``max_pool`` (ROCKET, Dempster et al. 2020), also each kernel's highest counted
  output per dilation: how strongly the shape occurs once, where the shares above say
  how often. It helps an outcome marked by one short event in a long series (synthetic
  cohorts: held-out log loss 0.461 -> 0.408) and lost on 10 of 14 quality sets, so it is
  off by default (docs/DEFAULTS.md, sixteenth round);
- ``readout``: one linear logit over the ~``features`` summaries (and the
  ``static_features`` static covariates appended to them, when the cohort has any),
  fitted in closed form by
  ridge regression with its penalty chosen by leave-one-out error (``fit``,
  ``patientcnn.models.closed_form``).

As a closed-form family it offers ``fit_biases`` (unsupervised), ``features`` and
``set_readout``, so that folds sharing the biases compute the features once
(``patientcnn.partner``).

The kernels and channel subsets follow from ``seed`` and are stored with the weights.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patientcnn.models.closed_form import ClosedFormNetwork
from patientcnn.models.layers import (
    positive_int,
    static_width,
    steps_mask,
    true_or_false,
    valid_interval,
)
from patientcnn.models.registry import register

TAPS = 9
KERNELS = 84  # choose(9, 3): every placement of the three taps of weight 2
GOLDEN = (math.sqrt(5) + 1) / 2  # low-discrepancy quantile positions: frac(i * golden ratio)
# patients whose kernel outputs are compared with the biases at once: at least 8, and as
# many as make about 8,192 steps (short series gain from larger pieces, long ones do not)
PATIENTS, STEPS_AT_ONCE = 8, 8192


def kernel_bank() -> torch.Tensor:
    """(84, 9): weight 2 at three taps, -1 elsewhere."""
    bank = -torch.ones(KERNELS, TAPS)
    for k, taps in enumerate(itertools.combinations(range(TAPS), 3)):
        bank[k, list(taps)] = 2.0
    return bank


def plan_dilations(seq_len: int, features: int, max_dilations: int) -> tuple[list[int], list[int]]:
    """Dilations spread exponentially up to the series length, and how many biases
    (features per kernel) each gets; the biases add up to ``features // 84`` per kernel."""
    per_kernel = max(1, features // KERNELS)
    slots = min(per_kernel, max_dilations)
    top = math.log2(max((seq_len - 1) / (TAPS - 1), 1.0))
    raw = np.floor(2.0 ** np.linspace(0.0, top, slots)).astype(int)
    dilations, counts = np.unique(raw, return_counts=True)
    biases = counts * per_kernel // slots
    biases[: per_kernel - biases.sum()] += 1  # the remainder, to the shortest dilations
    return dilations.tolist(), biases.tolist()


@register("rocket")
class RandomKernels(ClosedFormNetwork):
    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        features: int = 10000,
        max_dilations: int = 32,
        seed: int = 0,
        first_difference: bool = False,  # False rebuilds the bundles written before it existed
        static_features: int = 0,
        max_pool: bool = False,  # False rebuilds the bundles written before it existed
    ) -> None:
        super().__init__()
        positive_int("partner.rocket.features", features)
        positive_int("partner.rocket.max_dilations", max_dilations)
        true_or_false("partner.rocket.first_difference", first_difference)
        true_or_false("partner.rocket.max_pool", max_pool)
        self.seq_len = seq_len
        self.in_channels = in_channels
        self.first_difference = first_difference
        self.max_pool = max_pool
        per_series = features // 2 if first_difference else features
        self.dilations, self.biases_per = plan_dilations(seq_len, per_series, max_dilations)
        generator = torch.Generator().manual_seed(int(seed))
        bank = kernel_bank()
        weight = torch.zeros(len(self.dilations), KERNELS, in_channels, TAPS)
        for i in range(len(self.dilations)):
            for k in range(KERNELS):
                weight[i, k, random_channels(in_channels, generator)] = bank[k]
        self.register_buffer("weight", weight)
        bias_shape = (len(self.dilations), KERNELS, max(self.biases_per))
        self.register_buffer("bias", torch.zeros(bias_shape))
        if first_difference:  # the same kernels on the changes, with biases of their own
            self.register_buffer("diff_bias", torch.zeros(bias_shape))
        # per dilation and kernel: count only the steps whose taps are all real ('valid')
        interior = (torch.arange(len(self.dilations))[:, None] + torch.arange(KERNELS)) % 2 == 1
        self.register_buffer("interior", interior)
        per_representation = sum(self.biases_per) + (len(self.dilations) if max_pool else 0)
        self.n_features = KERNELS * per_representation * (2 if first_difference else 1)
        self.static_features = static_width(static_features)
        self.readout = nn.Linear(self.n_features + self.static_features, 1)

    def kernel_outputs(self, i: int, x: torch.Tensor, valid: torch.Tensor):
        """The (N, 84, L) outputs of the kernels at dilation ``self.dilations[i]`` and the
        (N, 84, L) steps each counts; ``x`` has its padded steps zeroed."""
        d = self.dilations[i]
        out = F.conv1d(x, self.weight[i], padding=(TAPS // 2) * d, dilation=d)
        start, end = valid_interval(valid)
        inner = steps_mask(start + (TAPS // 2) * d, end - (TAPS // 2) * d, x.shape[2])
        interior = self.interior[i][None, :, None]  # (and/or: ONNX Runtime has no bool Where)
        return out, (interior & inner) | (~interior & valid.unsqueeze(1))

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(N, n_features): per kernel, dilation and bias, the share of counted steps above it.

        Eager calls work through the patients a few at a time: the kernel outputs of a few
        patients stay in the CPU's cache while every bias is compared with them (6x faster
        than whole batches). Traced and exported graphs take the batch whole."""
        patients = max(PATIENTS, STEPS_AT_ONCE // x.shape[2])
        if torch.jit.is_tracing() or torch.compiler.is_exporting() or len(x) <= patients:
            return self._features(x, valid)
        pieces = zip(x.split(patients), valid.split(patients), strict=True)
        return torch.cat([self._features(xb, vb) for xb, vb in pieces])

    def _features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        eager = not (torch.jit.is_tracing() or torch.compiler.is_exporting())
        parts = []
        for series, counted_steps, bias in self.representations(x, valid):
            for i in range(len(self.dilations)):
                if eager:
                    out, count = self._counted_outputs(i, series, counted_steps)
                else:  # the same numbers in operators every exporter knows
                    out, counted = self.kernel_outputs(i, series, counted_steps)
                    count = counted.sum(dim=2).clamp(min=1).to(out.dtype)
                    # a step that does not count is never above a bias
                    out = out.masked_fill(~counted, float("-inf"))
                for j in range(self.biases_per[i]):
                    above = out > bias[i, :, j, None]
                    parts.append(above.sum(dim=2, dtype=torch.int32).to(out.dtype) / count)
                if self.max_pool:  # the highest counted output (0 where none counts)
                    peak = out.amax(dim=2)
                    parts.append(torch.where(torch.isinf(peak), torch.zeros_like(peak), peak))
        return torch.cat(parts, dim=1)

    def _counted_outputs(self, i: int, x: torch.Tensor, valid: torch.Tensor):
        """``kernel_outputs`` with the steps a kernel does not count set to -inf in place,
        and the (N, 84) counts: the interior kernels alternate with the others, so each
        half is masked through a strided view with its (N, 1, L) mask (2x faster than
        building the (N, 84, L) mask)."""
        d = self.dilations[i]
        out = F.conv1d(x, self.weight[i], padding=(TAPS // 2) * d, dilation=d)
        start, end = valid_interval(valid)
        inner = steps_mask(start + (TAPS // 2) * d, end - (TAPS // 2) * d, x.shape[2])
        first = 0 if bool(self.interior[i, 0]) else 1  # the first interior kernel
        out[:, first::2].masked_fill_(~inner, float("-inf"))
        count = out.new_empty(out.shape[:2])
        count[:, first::2] = inner.sum(dim=2).to(out.dtype)
        count[:, 1 - first :: 2] = valid.sum(dim=1, keepdim=True).to(out.dtype)
        if not bool(valid.all()):
            out[:, 1 - first :: 2].masked_fill_(~valid.unsqueeze(1), float("-inf"))
        return out, count.clamp(min=1)

    def representations(self, x: torch.Tensor, valid: torch.Tensor):
        """[(series, its real steps, its biases)]: the series with padded steps zeroed and,
        with ``first_difference``, its step-to-step changes, real where both steps are."""
        x = x * valid.unsqueeze(1).to(x.dtype)
        series = [(x, valid, self.bias)]
        if self.first_difference:
            both = valid[:, 1:] & valid[:, :-1]
            changed = torch.cat([both, torch.zeros_like(valid[:, :1])], dim=1)
            change = torch.cat([x[:, :, 1:] - x[:, :, :-1], torch.zeros_like(x[:, :, :1])], 2)
            series.append((change * changed.unsqueeze(1).to(x.dtype), changed, self.diff_bias))
        return series

    @torch.no_grad()
    def fit_biases(self, x: torch.Tensor, valid: torch.Tensor, seed: int = 0) -> None:
        """The biases: quantiles (at positions frac(i x golden ratio)) of each kernel's
        outputs on a random patient of ``x`` (of the series, and of its changes). No
        outcome is used."""
        generator = torch.Generator().manual_seed(int(seed))
        for series, counted_steps, bias in self.representations(x, valid):
            first = 0
            for i, n in enumerate(self.biases_per):
                picked = torch.randint(len(series), (KERNELS,), generator=generator)
                out, counted = self.kernel_outputs(i, series[picked], counted_steps[picked])
                for k in range(KERNELS):  # kernel k's outputs on patient picked[k]
                    values = out[k, k][counted[k, k]]
                    if values.numel() == 0:  # a patient shorter than the kernel's reach
                        values = out[k, k][counted_steps[picked[k]]]
                    if values.numel() == 0:  # no real step at all (changes of one step)
                        values = out.new_zeros(1)
                    positions = ((np.arange(first, first + n) + 1) * GOLDEN) % 1.0
                    bias[i, k, :n] = torch.quantile(
                        values.float(), torch.from_numpy(positions).float()
                    )
                    first += n

    def shape_table(self) -> list[dict]:
        rows = []
        for d in self.dilations:
            rows.append(self._kernel_row(f"kernels_d{d}", d))
        if self.first_difference:  # the same kernels and dilations on the changes: one row
            top = self.dilations[-1]
            rows.append(self._kernel_row(f"changes_d{self.dilations[0]}-{top}", top))
            rows[-1]["dilation"] = f"{self.dilations[0]}-{top}"
            rows[-1]["out_channels"] = KERNELS * len(self.dilations)
        in_channels = KERNELS * len(self.dilations) * (1 + self.first_difference)
        kernel = f"{self.n_features} PPV" + (" and max" if self.max_pool else "")
        layer = "ppv+max+linear" if self.max_pool else "ppv+linear"
        rows.append(self.readout_row(layer, in_channels, kernel, rows[-1]["receptive_field"]))
        return rows

    def _kernel_row(self, layer: str, dilation: int) -> dict:
        return {
            "layer": layer,
            "in_channels": self.in_channels,
            "out_channels": KERNELS,
            "kernel": TAPS,
            "stride": 1,
            "dilation": dilation,
            "padding": "same/valid",
            "groups": 1,
            "length_in": self.seq_len,
            "length_out": self.seq_len,
            "receptive_field": 1 + (TAPS - 1) * dilation,
            "params": 0,
        }


def random_channels(channels: int, generator: torch.Generator) -> torch.Tensor:
    """A random subset of the input channels: 1 to min(C, 9) of them, small sets likelier."""
    if channels == 1:
        return torch.zeros(1, dtype=torch.long)
    top = math.log2(min(channels, TAPS) + 1)
    size = int(2 ** (torch.rand((), generator=generator).item() * top))
    size = min(max(size, 1), channels)
    return torch.randperm(channels, generator=generator)[:size]
