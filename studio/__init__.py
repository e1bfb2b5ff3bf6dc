"""Shotline studio: the application around the generation pipelines (config, database, services, worker, UI)."""

__version__ = "0.1.0"
