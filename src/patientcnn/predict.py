"""Batch scoring: a long table of new patients in, one row per patient out, checkpoint alone.

The output holds the id column, ``probability`` and ``predicted_label`` (1 when the
probability reaches the threshold stored in the checkpoint, or the one given). A model
trained with static covariates needs the patients' static table too (``static``). Patients
without a single observed value of the model's features get no row; they are listed in
a warning. Large inputs are scored in chunks of whole patients (see
``patientcnn.data.chunks``), so rows of one patient may lie anywhere in the file and memory
does not grow with the file; the output is then ordered by chunk, then by id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patientcnn.errors import UserError
from patientcnn.files import (
    atomic_write,
    check_input_file,
    csv_safe,
    refuse_overwriting_inputs,
    remove_stale_temporaries,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow.parquet as pq

    from patientcnn.inference import Scorer

log = logging.getLogger(__name__)

ENGINES = ("chunks", "duckdb")
OUTPUT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class PredictionSummary:
    output: Path
    patients: int
    predicted_positive: int
    skipped: list  # ids of patients without usable measurements
    threshold: float


def predict_file(
    checkpoint: str | Path,
    input: str | Path,
    output: str | Path,
    threshold: float | None = None,
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int | str = "auto",
    chunk_rows: int = 2_000_000,
    tmp_dir: str | Path | None = None,
    progress: bool = True,
    explain: bool = False,
    static: str | Path | None = None,
    engine: str = "chunks",
) -> PredictionSummary:
    """Score every patient of ``input`` with the checkpoint and write ``output`` atomically.

    ``explain``: also name each patient's top contributing features and time windows
    (integrated gradients of the blend's differentiable sides, ``patientcnn.explain``).
    ``static``: the patients' static covariate table (one row per patient), required
    exactly when the model was trained with static covariates. ``engine``: ``chunks``
    (pandas, a chunk of whole patients at a time) or ``duckdb`` (the grid built out of
    core and cached as memory-mapped files beside the input, then scored a block of
    patients at a time; ``patientcnn.data.mapped.scoring_blocks``)."""
    output = Path(output)
    fmt = output_format(output)
    refuse_overwriting_inputs(output, {"input": input, "checkpoint": checkpoint, "static": static})
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists; pass overwrite=true to replace it")
    check_input_file(checkpoint, "checkpoint")
    check_input_file(input)
    # the numerical libraries (seconds to import) only once the arguments are checked
    import numpy as np
    from tqdm.auto import tqdm

    from patientcnn.checkpoint import load_bundle
    from patientcnn.data.chunks import CHUNKS_PREFIX
    from patientcnn.inference import (
        Scorer,
        check_input_columns,
        check_threshold,
        probabilities,
        unusable,
        warn_skipped,
    )

    bundle = load_bundle(checkpoint)
    threshold = check_threshold(bundle.threshold if threshold is None else threshold)
    source = (
        f"the checkpoint's, rule {bundle.threshold_rule} on validation patients"
        if threshold == bundle.threshold
        else "given"
    )
    scorer = Scorer.from_bundle(bundle, device=device, batch_size=batch_size)
    check_input_columns(Path(input), scorer)
    static_table = scorer.read_static(static)
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {ENGINES}, got {engine!r}")
    if int(chunk_rows) < 1:
        raise UserError(f"chunk_rows must be a positive integer, got {chunk_rows}")

    if tmp_dir is None:  # patient data stays beside the output, not in the system temp
        tmp_dir = output.parent
    remove_stale_temporaries(Path(tmp_dir), (f"{CHUNKS_PREFIX}*",))
    counts = {"patients": 0, "positive": 0}
    skipped: list = []
    if explain:
        from patientcnn.explain import attributed_sides, what_is_attributed

        if attributed_sides(scorer.model)[0]:
            log.info("explain=true: attributing %s", what_is_attributed(scorer.model))
        else:
            log.warning(
                "explain=true: %s; top_features and top_time_windows are left empty",
                what_is_attributed(scorer.model),
            )

    def write(tmp: Path) -> None:
        sink = _Sink(tmp, fmt, scorer.columns["id_col"], explain)
        bar = None  # opened once the first chunk has passed validation: errors print alone
        try:
            chunks = _read_chunks(Path(input), scorer, int(chunk_rows), tmp_dir, progress, engine)
            for arrays in chunks:
                bar = bar or tqdm(total=0, unit="patients", desc="scoring", disable=not progress)
                empty = unusable(arrays)
                skipped.extend(arrays.ids[empty].tolist())
                kept = arrays.subset(np.flatnonzero(~empty))
                bar.total += len(kept.ids)
                covariates = scorer.static_inputs(static_table, kept.ids, static)
                probability = probabilities(scorer.logits(kept, covariates))
                label = (probability >= threshold).astype(np.int8)
                reasons = scorer.explain(kept, covariates) if explain else None
                sink.write(kept.ids, probability, label, reasons)
                counts["patients"] += len(kept.ids)
                counts["positive"] += int(label.sum())
                bar.update(len(kept.ids))
        finally:
            if bar is not None:
                bar.close()
            sink.close()

    atomic_write(output, write, overwrite=overwrite)
    if skipped:
        warn_skipped(skipped, Path(input), "get no prediction")
    log.info(
        "wrote %d patients to %s (%d predicted positive at threshold %.4f, %s)",
        counts["patients"],
        output,
        counts["positive"],
        threshold,
        source,
    )
    return PredictionSummary(output, counts["patients"], counts["positive"], skipped, threshold)


def output_format(path: Path) -> str:
    fmt = OUTPUT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: output must end in .csv, .parquet or .pq")
    return fmt


def _read_chunks(
    path: Path,
    scorer: Scorer,
    chunk_rows: int,
    tmp_dir: str | Path | None,
    progress: bool,
    engine: str = "chunks",
):
    """Reshaped patients, one chunk of whole patients at a time."""
    if engine == "duckdb":
        from patientcnn.data.mapped import scoring_blocks

        yield from scoring_blocks(path, scorer.table_spec())
        return
    from patientcnn.data.chunks import patient_chunks
    from patientcnn.data.cohort import load_measurements

    spec = scorer.table_spec()
    numeric = [] if scorer.eav else scorer.features  # EAV values are checked when read
    with patient_chunks(
        path, scorer.input_columns, numeric, chunk_rows, tmp_dir, progress
    ) as files:
        for part in files:
            try:
                arrays, _ = load_measurements(part, spec)
            except UserError as err:
                if part == path:
                    raise
                raise UserError(_in_original_file(str(err), part, path)) from err
            yield arrays


def _in_original_file(message: str, part: Path, path: Path) -> str:
    """A message about a temporary partition, restated for the user's file (row numbers of
    a partition mean nothing to the user, the patient does)."""
    message = message.replace(str(part), str(path))
    return re.sub(r"in row \d+ \(patient ([^)]*)\)", r"in a row of patient \1", message)


class _Sink:
    """Appends one chunk of results at a time to a CSV or Parquet file."""

    def __init__(self, path: Path, fmt: str, id_col: str, explain: bool = False) -> None:
        self.path, self.fmt, self.id_col, self.explain = path, fmt, id_col, explain
        self.parquet: pq.ParquetWriter | None = None
        self.started = False

    def write(
        self,
        ids: np.ndarray,
        probability: np.ndarray,
        label: np.ndarray,
        reasons: tuple[list[str], list[str]] | None = None,
    ) -> None:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = pd.DataFrame(
            {
                self.id_col: pd.Series(ids, dtype=object),  # text, as in the input
                "probability": probability,
                "predicted_label": label,
            }
        )
        if self.explain:
            features, windows = reasons or ([], [])
            frame["top_features"] = pd.Series(features, dtype=object)
            frame["top_time_windows"] = pd.Series(windows, dtype=object)
        if self.fmt == "csv":
            mode, header = ("a", False) if self.started else ("w", True)
            csv_safe(frame).to_csv(self.path, mode=mode, header=header, index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(self.path, table.schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
        self.started = True

    def close(self) -> None:
        """Finish the file; with no patient at all it still gets its header."""
        if not self.started:
            import numpy as np

            self.write(np.array([], dtype=object), np.array([]), np.array([], dtype=np.int8))
        if self.parquet is not None:
            self.parquet.close()
