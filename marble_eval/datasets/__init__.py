"""Benchmark datasets: one YAML per dataset in benchmarks/, one parser per source format."""

from marble_eval.datasets.base import SPLITS, Dataset, Item, safe_join, top_n_vocabulary

__all__ = ["SPLITS", "Dataset", "Item", "safe_join", "top_n_vocabulary"]
