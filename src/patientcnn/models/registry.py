"""Networks by name: ``create_network(name, in_channels, seq_len, **config)``.

A checkpoint stores the registry name and the plain config, never a class path, so a
bundle rebuilds its network without running anything the file names. A new family is
one module in this package that decorates its class with ``@register("name")`` (and is
imported in ``_FAMILIES`` below) plus one yaml in ``configs/model/``.

Every network takes ``x`` (N, C, L) and ``valid`` (N, L), and ``static`` (N, S) when it
was built with ``static_features=S`` > 0 (per-patient covariates joined before the
head), and returns logits (N,); padded steps never change a patient's logit.
``shape_table()`` lists its blocks.
"""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from patientcnn.errors import UserError
from patientcnn.models.layers import Downsampled, positive_int

# the modules that register networks
_FAMILIES = ("conv", "resnet", "inception", "tcn", "rocket", "summary", "linear")
_NETWORKS: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: make the network available as ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _NETWORKS[name] = cls
        return cls

    return add


def network_names() -> list[str]:
    _load_families()
    return sorted(_NETWORKS)


def network_class(name: str) -> type[nn.Module]:
    _load_families()
    if name not in _NETWORKS:
        raise UserError(f"model.net={name!r} is not a network; choose one of {network_names()}")
    return _NETWORKS[name]


def name_of(network: nn.Module) -> str:
    """The registry name of a built network (its class's), for messages."""
    _load_families()
    names = [n for n, cls in _NETWORKS.items() if type(network) is cls]
    return names[0] if names else type(network).__name__


def closed_form_names() -> list[str]:
    """Families fitted in closed form by their ``fit(x, valid, y, seed)`` (no gradient
    steps), marked ``closed_form = True``: they serve as partners (``patientcnn.partner``)."""
    _load_families()
    return sorted(n for n, cls in _NETWORKS.items() if getattr(cls, "closed_form", False))


# the model config's keys that the LightningModule (models/classifier.py) takes, not the network
OPTIMISATION_KEYS = (
    "lr",
    "weight_decay",
    "scheduler",
    "warmup",
    "pos_weight",
    "mixup",
    "crop",
    "jitter",
    "precise_bn",
)


def network_config(model_config: dict) -> tuple[str, dict]:
    """A model config (``configs/model/*.yaml``, or a Classifier's hyperparameters) split
    into the registry name and the network's own settings: all but the optimisation keys,
    ``ensemble``, ``_target_`` and the input shape. Needs no Lightning import."""
    skip = {*OPTIMISATION_KEYS, "net", "in_channels", "seq_len", "ensemble", "_target_"}
    return model_config.get("net", "cnn"), {k: v for k, v in model_config.items() if k not in skip}


def create_network(
    name: str, in_channels: int, seq_len: int, downsample: int = 1, **config
) -> nn.Module:
    """The network ``name`` for inputs of ``in_channels`` features and ``seq_len`` steps.

    ``downsample`` > 1 (any family) averages each patient's series over windows of that
    many steps before the network, which then sees ceil(seq_len / downsample) steps.
    """
    cls = network_class(name)
    known = set(inspect.signature(cls).parameters) - {"in_channels", "seq_len"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UserError(
            f"model.net={name} has no setting(s) {', '.join(unknown)}; "
            f"its settings are: {', '.join(sorted(known))}"
        )
    positive_int("downsample", downsample)
    if downsample == 1:
        return cls(in_channels=in_channels, seq_len=seq_len, **config)
    net = cls(in_channels=in_channels, seq_len=-(-seq_len // downsample), **config)
    return Downsampled(net, downsample, seq_len)


def _load_families() -> None:
    for module in _FAMILIES:
        importlib.import_module(f"patientcnn.models.{module}")
