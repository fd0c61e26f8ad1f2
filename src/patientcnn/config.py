"""Building objects from config nodes, and which classes a config may name.

Config ``_target_``s may only name classes from ``TRUSTED_TARGETS`` (Hydra refuses
others), and a constructor that rejects its arguments is reported as a config error
naming the key.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from patientcnn.errors import UserError

TRUSTED_TARGETS = ["patientcnn.*", "pytorch_lightning.*", "lightning.*", "torch.*"]


def configured(node: DictConfig, key: str, **kwargs: object) -> object:
    """Instantiate the config ``node`` found at ``key``; a constructor that rejects its
    arguments is a config error.

    Constructors only store and check their arguments, so any exception they raise (a
    missing ``???`` value, a negative max_epochs, a dropout of 2) is the user's to fix and
    is reported as one line naming the config key.
    """
    try:
        return instantiate(node, **kwargs)
    except UserError:
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"config {key}: {reason}") from err
