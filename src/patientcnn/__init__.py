"""Patient time-series classification with 1D CNNs (see README.md and DESIGN)."""

__version__ = "0.1.0"
