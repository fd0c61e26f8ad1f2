"""Score new patients with a trained checkpoint alone (see README, "Scoring new patients").

    python scripts/predict.py checkpoint=outputs/runs/.../checkpoints/best.ckpt \
        input=new.csv output=predictions.csv [static=static.csv] [threshold=0.3] [overwrite=true]
"""

import hydra
from omegaconf import DictConfig

from patientcnn.config import TRUSTED_TARGETS
from patientcnn.exit_policy import report_user_errors, run_main
from patientcnn.predict import predict_file


@hydra.main(config_path="../configs", config_name="predict", execution_whitelist=TRUSTED_TARGETS)
@report_user_errors
def main(cfg: DictConfig) -> None:
    predict_file(
        cfg.checkpoint,
        cfg.input,
        cfg.output,
        threshold=cfg.threshold,
        overwrite=cfg.overwrite,
        device=cfg.device,
        batch_size=cfg.batch_size,
        chunk_rows=cfg.chunk_rows,
        tmp_dir=cfg.tmp_dir,
        progress=cfg.progress,
        explain=cfg.explain,
        static=cfg.static,
        engine=cfg.get("engine", "chunks"),
    )


if __name__ == "__main__":
    run_main(main)
