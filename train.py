"""Train a 1D-CNN on patient time series: `python train.py [overrides]` (see README)."""

import hydra
from omegaconf import DictConfig

from patientcnn.config import TRUSTED_TARGETS
from patientcnn.data.spec import check_input_files
from patientcnn.exit_policy import report_user_errors, run_main


@hydra.main(config_path="configs", config_name="train", execution_whitelist=TRUSTED_TARGETS)
@report_user_errors
def main(cfg: DictConfig) -> float:
    # a missing input file is reported before seconds of torch and Lightning imports
    check_input_files(cfg.data)
    from patientcnn.train import train

    return train(cfg)


if __name__ == "__main__":
    run_main(main)
