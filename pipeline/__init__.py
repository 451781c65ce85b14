"""Event-sourced report-processing pipeline for child-exploitation tiplines."""

__version__ = "0.1.0"
