"""Export a checkpoint's model for deployment: ONNX or TorchScript over the (N, C, L) input.

python scripts/export.py checkpoint=.../best.ckpt format=onnx
"""

import hydra
from omegaconf import DictConfig

from patientcnn.config import TRUSTED_TARGETS
from patientcnn.exit_policy import report_user_errors, run_main
from patientcnn.files import check_input_file, refuse_overwriting_inputs


@hydra.main(config_path="../configs", config_name="export", execution_whitelist=TRUSTED_TARGETS)
@report_user_errors
def main(cfg: DictConfig) -> None:
    check_input_file(cfg.checkpoint, "checkpoint")
    if cfg.output:
        refuse_overwriting_inputs(cfg.output, {"checkpoint": cfg.checkpoint})
    from patientcnn.export import export_checkpoint  # torch: only once the inputs are there

    export_checkpoint(cfg.checkpoint, cfg.format, cfg.output, overwrite=cfg.overwrite)


if __name__ == "__main__":
    run_main(main)
