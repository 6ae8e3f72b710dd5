"""Where a task's rows come from: one registered source per kind (files, Hugging Face datasets), each one module."""

from harness.sources import files, hf_datasets
from harness.sources.base import SOURCES, DataSource, Table, source_of

__all__ = ["SOURCES", "DataSource", "Table", "files", "hf_datasets", "source_of"]
