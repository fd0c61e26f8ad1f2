"""Export a checkpoint's model for deployment: ONNX or TorchScript over the (N, C, L) input.

python scripts/export.py checkpoint=.../best.ckpt format=onnx
"""

import hydra
from omegaconf import DictConfig

from patientcnn.cli import report_user_errors
from patientcnn.export import export_checkpoint


@hydra.main(config_path="../configs", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    export_checkpoint(cfg.checkpoint, cfg.format, cfg.output, overwrite=cfg.overwrite)


if __name__ == "__main__":
    main()
