"""Instantiating config nodes: only named classes, and any failure as one line.

A config (a yaml file or a command-line override such as
``+callbacks.x={_target_:...}``) can name a Python object to build. Only the classes
listed in ``TRUSTED_TARGETS`` may be named: the project's own, Lightning's Trainer,
callbacks and loggers, the optimisers and schedulers the model uses, and the plugins a
sweep needs. No entry is a package wildcard, so nothing that reads or writes files
(``torch.load``, ``torch.save``, ``numpy.load``, ``patientcnn.files.*``...) and nothing
that runs code can be reached from a config. The same list is handed to Hydra
(``hydra.main(execution_whitelist=...)``), which applies it to its own ``hydra.callbacks``
and ``hydra.job_logging`` sections too.
"""

from __future__ import annotations

from collections.abc import Iterator

from hydra.utils import execution_whitelist, instantiate
from omegaconf import DictConfig, ListConfig

from patientcnn.errors import UserError

_LIGHTNING_CALLBACKS = (
    "ModelCheckpoint",
    "EarlyStopping",
    "TQDMProgressBar",
    "RichProgressBar",
    "LearningRateMonitor",
    "StochasticWeightAveraging",
    "GradientAccumulationScheduler",
    "Timer",
)
_LIGHTNING_LOGGERS = ("CSVLogger", "TensorBoardLogger", "MLFlowLogger")

# Exact names only: Hydra checks the name written in the config and the object it
# resolves to, so a class is listed under every public path a config may use.
TRUSTED_TARGETS: list[str] = [
    # the project's own
    "patientcnn.data.datamodule.PatientDataModule",
    "patientcnn.models.classifier.Classifier",  # the one LightningModule (any network family)
    "patientcnn.loggers.ResumableCSVLogger",
    "patientcnn.runs.RunGuard",
    # Lightning: the Trainer, callbacks and loggers, under both package names
    *[
        f"{package}.{name}"
        for package in ("pytorch_lightning", "lightning.pytorch")
        for name in (
            "Trainer",
            *[f"callbacks.{c}" for c in _LIGHTNING_CALLBACKS],
            *[f"loggers.{lg}" for lg in _LIGHTNING_LOGGERS],
        )
    ],
    # optimisers and schedulers
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.SGD",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.ReduceLROnPlateau",
    "torch.optim.lr_scheduler.OneCycleLR",
    "torch.optim.lr_scheduler.StepLR",
    # sweeps: the Optuna sweeper plugin's samplers
    "optuna.samplers.TPESampler",
    "optuna.samplers.RandomSampler",
    "optuna.samplers.GridSampler",
    "optuna.samplers.CmaEsSampler",
]


def configured(node: DictConfig, key: str, **kwargs: object) -> object:
    """Instantiate the config ``node`` found at ``key``; a constructor that rejects its
    arguments is a config error.

    Every ``_target_`` in the node (nested ones too) must be in ``TRUSTED_TARGETS``;
    anything else is refused before any object is built. Constructors only store and
    check their arguments, so any exception they raise (a missing ``???`` value, a
    negative max_epochs, a dropout of 2) is the user's to fix and is reported as one line
    naming the config key.
    """
    check_targets(node, key)
    try:
        with execution_whitelist(TRUSTED_TARGETS, reset=True):
            return instantiate(node, **kwargs)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"config {key}: {first_line(err)}") from err


def check_targets(node: object, key: str) -> None:
    """Refuse a node that names any ``_target_`` outside ``TRUSTED_TARGETS``."""
    for where, target in _targets(node, key):
        if target not in TRUSTED_TARGETS:
            raise UserError(
                f"config {where}: _target_ {target!r} is not allowed; a config may only "
                "instantiate the classes listed in patientcnn.config.TRUSTED_TARGETS"
            )


def _targets(node: object, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for name, value in items:
            if name == "_target_":
                yield key, value if isinstance(value, str) else repr(value)
            else:
                yield from _targets(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            yield from _targets(value, f"{key}[{i}]")


def first_line(err: BaseException) -> str:
    """An exception's first non-empty line, or its type name."""
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__
