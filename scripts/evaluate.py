"""External validation: training's metrics on a new labelled cohort, checkpoint alone.

python scripts/evaluate.py checkpoint=.../best.ckpt data.measurements=m.csv data.labels=y.csv
    [data.static=static.csv]   (required by a model trained with static covariates)
"""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from patientcnn.config import TRUSTED_TARGETS
from patientcnn.data.spec import check_input_files
from patientcnn.errors import UserError
from patientcnn.exit_policy import report_user_errors, run_main
from patientcnn.files import check_input_file, refuse_overwriting_inputs, write_json

log = logging.getLogger("patientcnn.evaluate")


@hydra.main(config_path="../configs", config_name="evaluate", execution_whitelist=TRUSTED_TARGETS)
@report_user_errors
def main(cfg: DictConfig) -> None:
    target = Path(cfg.paths.output_dir) / "metrics.json"
    inputs = {"checkpoint": cfg.checkpoint, "measurements": cfg.data.measurements}
    refuse_overwriting_inputs(
        target, inputs | {"labels": cfg.data.labels, "static": cfg.data.static}
    )
    if target.exists() and not cfg.overwrite:
        raise UserError(f"{target} already exists; pass overwrite=true to replace it")
    check_input_file(cfg.checkpoint, "checkpoint")
    check_input_files(cfg.data)
    # torch, pandas, scikit-learn, matplotlib: only once the inputs are there
    from patientcnn.checkpoint import load_bundle
    from patientcnn.evaluate import evaluate_cohort
    from patientcnn.report import write_report
    from patientcnn.report.subgroups import subgroups_from

    bundle = load_bundle(cfg.checkpoint)
    result = evaluate_cohort(
        bundle,
        cfg.data.measurements,
        cfg.data.labels,
        label_col=cfg.data.label_col,
        positive_label=cfg.data.positive_label,
        threshold=cfg.threshold,
        device=cfg.device,
        batch_size=cfg.batch_size,
        static=cfg.data.static,
    )
    record = result.record(cfg.checkpoint, cfg.data.measurements)
    columns = list(cfg.report.get("subgroups") or [])
    subgroups = None
    if cfg.report.enabled and columns:  # read before any report file is written
        subgroups = subgroups_from(
            [cfg.data.static, cfg.data.labels or cfg.data.measurements],
            bundle.data["columns"]["id_col"],
            columns,
            result.ids,
        )
    if cfg.report.enabled:
        folder = Path(cfg.paths.output_dir) / "report"
        record["confidence_intervals"] = write_report(
            folder,
            result.labels,
            result.probabilities,
            result.threshold,
            f"External evaluation of {Path(cfg.checkpoint).name} on {cfg.data.measurements}",
            n_resamples=cfg.report.resamples,
            seed=cfg.report.seed,
            level=cfg.report.level,
            patients="evaluated patients",
            subgroups=subgroups,
        )
        if subgroups:
            record["subgroups"] = record["confidence_intervals"].pop("subgroups")
        record["report"] = str(folder / "report.html")
        log.info("evaluation report: %s", record["report"])
    write_json(target, record, cfg.overwrite)
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))
    log.info("wrote %s", target)


if __name__ == "__main__":
    run_main(main)
