"""The evaluation report: figures, bootstrap intervals, baselines and importance."""

from patientcnn.report.build import write_report

__all__ = ["write_report"]
