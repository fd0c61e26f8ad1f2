"""Lightning's CSV logger, made to keep the log of the epochs before a resumed run."""

from __future__ import annotations

import csv
import os

from lightning_fabric.loggers.csv_logs import _ExperimentWriter
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Appends to an existing ``metrics.csv`` (Lightning's writer deletes it on start)."""

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            header = next(csv.reader(file), [])
        self.metrics_keys = sorted(header)  # new keys later rewrite the header, rows kept


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` grows across ``resume=true`` restarts."""

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
