"""Where a task's rows come from: one registered source per kind (files, Hugging Face datasets, DVC), each one module
whose settings model is its part of a task's `data:` block."""

from harness.plugins import load
from harness.sources import dvc_repo, files, hf_datasets
from harness.sources.base import SOURCES, DataSource, SplitSpec, Table, register

__all__ = ["SOURCES", "DataSource", "SplitSpec", "Table", "dvc_repo", "files", "hf_datasets", "register"]

load("harness.sources")  # installed packages' own, after the built-in ones
