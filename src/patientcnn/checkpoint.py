"""The checkpoint bundle: the only link from training to inference.

One file (``checkpoints/best.ckpt`` of a run) holds everything that scoring new
patients needs, and nothing else:

- the network by registry name with its plain settings (never a class path), and the
  weights of each ensemble member (one per fold and seed);
- the partner networks fitted in closed form beside them, when the run had any, each
  family by registry name with its settings and weights, and the blend of the sides
  (``patientcnn.partner``);
- the calibration (scale and shift of the mean logit) and the decision threshold;
- the data state: columns, the fitted grid, how rows sharing a time were combined,
  the fitted preprocessing and the channel order;
- the recipe that trained it, for the record.

Everything in it is tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` reads it and no code stored in a file is ever run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from patientcnn.errors import UserError
from patientcnn.files import atomic_write
from patientcnn.models.ensemble import EnsembleNet
from patientcnn.models.registry import create_network

BUNDLE_KEY = "patientcnn"
BUNDLE_VERSION = 3
READABLE_VERSIONS = (2, 3)  # 2: one partner family, under 'partner' (converted on loading)


@dataclass
class Bundle:
    network: dict  # {"name", "config", "in_channels", "seq_len"}
    members: list[dict]  # one state dict of the network per member
    data: dict
    threshold: float
    calibration: dict = field(
        default_factory=lambda: {"method": "none", "scale": 1.0, "shift": 0.0}
    )
    threshold_rule: str = "fixed"
    extra: dict = field(default_factory=dict)  # recipe and training record
    partners: dict | None = None  # {"families": [{"name", "config", "members"}], "blend"}
    path: Path | None = None

    @property
    def in_channels(self) -> int:
        return int(self.network["in_channels"])

    @property
    def seq_len(self) -> int:
        return int(self.network["seq_len"])

    def build_model(self) -> EnsembleNet:
        """The trained ensemble in eval mode, rebuilt from the registry name and settings."""
        try:
            members = self._networks(self.network, self.members)
            partners, blend = [], None
            if self.partners:
                partners = [self._networks(f, f["members"]) for f in self.partners["families"]]
                blend = self.partners["blend"]
            model = EnsembleNet(members, self.calibration, partners, blend)
        except (UserError, TypeError, ValueError, RuntimeError, KeyError) as err:
            reason = (
                str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            )
            raise UserError(
                f"{self.path}: the stored weights and settings do not make a model ({reason})"
            ) from err
        return model.eval()

    def _networks(self, spec: dict, states: list[dict]) -> list[torch.nn.Module]:
        networks = []
        for state in states:
            net = create_network(spec["name"], self.in_channels, self.seq_len, **spec["config"])
            net.load_state_dict(state)
            networks.append(net)
        return networks

    def to_dict(self) -> dict:
        return {
            "version": BUNDLE_VERSION,
            "network": self.network,
            "members": self.members,
            "partners": self.partners,
            "calibration": self.calibration,
            "threshold": float(self.threshold),
            "threshold_rule": self.threshold_rule,
            "data": self.data,
            "extra": self.extra,
        }


def save_bundle(path: str | Path, bundle: Bundle) -> Path:
    """Write ``bundle`` to ``path`` atomically (never a half-written checkpoint)."""
    raw = {BUNDLE_KEY: bundle.to_dict()}
    return atomic_write(path, lambda tmp: torch.save(raw, tmp))


def bundle_from_networks(
    networks: list[torch.nn.Module],
    name: str,
    config: dict,
    in_channels: int,
    seq_len: int,
    data: dict,
    threshold: float = 0.5,
    calibration: dict | None = None,
) -> Bundle:
    """A bundle for networks built in code (benchmarks, tests, models trained elsewhere)."""
    return Bundle(
        network={
            "name": name,
            "config": dict(config),
            "in_channels": in_channels,
            "seq_len": seq_len,
        },
        members=[{k: v.detach().cpu() for k, v in n.state_dict().items()} for n in networks],
        data=data,
        threshold=float(threshold),
        calibration=calibration or {"method": "none", "scale": 1.0, "shift": 0.0},
    )


def load_bundle(path: str | Path) -> Bundle:
    """Read a checkpoint safely; any problem with the file is one UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path}: not a readable patientcnn checkpoint (truncated, corrupt, or holding "
            f"objects that are not plain data: {reason})"
        ) from err
    if not isinstance(raw, dict) or not isinstance(raw.get(BUNDLE_KEY), dict):
        raise UserError(f"{path}: not a patientcnn checkpoint (no '{BUNDLE_KEY}' section)")
    bundle = raw[BUNDLE_KEY]
    version = bundle.get("version")
    if version not in READABLE_VERSIONS:
        raise UserError(
            f"{path}: checkpoint bundle version {version} is not supported by this patientcnn "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); retrain the model "
            "with this version"
        )
    needed = {"network", "members", "data", "threshold", "calibration"}
    if not needed <= set(bundle):
        raise UserError(
            f"{path}: the '{BUNDLE_KEY}' section is incomplete "
            f"(missing: {', '.join(sorted(needed - set(bundle)))})"
        )
    network = bundle["network"]
    partners = bundle.get("partners") if version >= 3 else _partners_of_version_2(bundle, path)
    families = partners.get("families") if isinstance(partners, dict) else None
    if partners is not None and not (isinstance(families, list) and families):
        raise UserError(f"{path}: the stored partners are not a list of families")
    for what, spec in (("network", network), *(("partner", f) for f in families or [])):
        if not (
            isinstance(spec, dict)
            and isinstance(spec.get("name"), str)
            and isinstance(spec.get("config"), dict)
            and "_target_" not in spec["config"]
        ):
            raise UserError(f"{path}: the stored {what} is not a registry name with plain settings")
    members = bundle["members"]
    for states in (members, *(f["members"] for f in families or [])):
        if not (isinstance(states, list) and states and all(isinstance(m, dict) for m in states)):
            raise UserError(f"{path}: the checkpoint holds no network weights")
    if partners is not None:
        blend = partners.get("blend")
        if not (
            isinstance(blend, dict)
            and isinstance(blend.get("weights"), list)
            and isinstance(blend.get("platt"), list)
            and len(blend["weights"]) == len(blend["platt"]) == len(families) + 1
        ):
            raise UserError(f"{path}: the stored partners have no blend of every side")
    return Bundle(
        network=network,
        members=members,
        data=bundle["data"],
        threshold=float(bundle["threshold"]),
        calibration=bundle["calibration"],
        threshold_rule=str(bundle.get("threshold_rule", "fixed")),
        extra=bundle.get("extra", {}),
        partners=partners,
        path=path,
    )


def _partners_of_version_2(bundle: dict, path: Path) -> dict | None:
    """A version-2 bundle's one partner family (``partner``: name, config, members and the
    two-sided blend ``w (a z + b) + (1 - w)(c z' + d)``) as the partners of version 3."""
    partner = bundle.get("partner")
    if partner is None:
        return None
    blend = partner.get("blend") if isinstance(partner, dict) else None
    if not isinstance(blend, dict) or not {"weight", "networks", "partners"} <= set(blend):
        raise UserError(f"{path}: the stored partner has no blend")
    family = {k: partner.get(k) for k in ("name", "config", "members")}
    weight = float(blend["weight"])
    return {
        "families": [family],
        "blend": {
            "sides": ["trained networks", family["name"]],
            "weights": [weight, 1.0 - weight],
            "platt": [list(blend["networks"]), list(blend["partners"])],
        },
    }
