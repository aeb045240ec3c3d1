"""Task arithmetic over checkpoint files: theta = theta_base + lambda * sum_i (theta_i - theta_base).

Works on the raw state dicts of the weight files (safetensors or torch .bin), so key names,
legacy weight-norm names included, are kept as the base has them. The merged directory
has the hub layout every command accepts: the base's config.json (and
preprocessor_config.json), one model.safetensors, and marble_eval_merge.json with the
provenance (inputs, their fingerprints, lambda).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from marble_eval import __version__
from marble_eval.errors import MarbleEvalError
from marble_eval.models.hub import ResolvedModel, fingerprint

FORMULA = "theta = theta_base + lambda * sum_i (theta_i - theta_base)"
PROVENANCE_FILE = "marble_eval_merge.json"
# config.json fields that may differ between inputs: bookkeeping, and settings used only in training.
IGNORED_CONFIG_FIELDS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "layerdrop",
                         "apply_spec_augment")


class CheckpointTensors(Mapping[str, torch.Tensor]):
    """The tensors of a checkpoint's weight files, read one at a time (safetensors lazily, .bin memory-mapped)."""

    def __init__(self, model: ResolvedModel) -> None:
        self.model = model
        self.handles: dict[str, Any] = {}
        for path in model.weight_files():
            handle = safe_open(str(path), framework="pt") if path.suffix == ".safetensors" else _load_bin(path)
            for key in handle.keys():
                if key in self.handles:
                    raise MarbleEvalError(f"{path}: key {key!r} is also in another weights file of {model.directory}")
                self.handles[key] = handle

    def __getitem__(self, key: str) -> torch.Tensor:
        handle = self.handles[key]
        return handle.get_tensor(key) if hasattr(handle, "get_tensor") else handle[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.handles)

    def __len__(self) -> int:
        return len(self.handles)


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class MergeReport:
    """What merge_checkpoints wrote."""

    output: Path
    n_float: int      # tensors combined by task arithmetic
    n_copied: int     # non-float tensors, equal in every input, copied from the base
    provenance: dict[str, Any]


def _training_only(field_name: str) -> bool:
    return field_name in IGNORED_CONFIG_FIELDS or "dropout" in field_name or field_name.startswith("mask_")


def check_same_config(base: ResolvedModel, other: ResolvedModel) -> None:
    """Refuse two configs that differ in a field that matters for inference, naming the field."""
    base_config, other_config = base.config(), other.config()
    for name in sorted(set(base_config) | set(other_config)):
        if _training_only(name):
            continue
        if base_config.get(name) != other_config.get(name):
            raise MarbleEvalError(f"{other.directory / 'config.json'}: field {name!r} is "
                                  f"{other_config.get(name)!r} but the base has {base_config.get(name)!r}; "
                                  f"task arithmetic needs models of the same architecture")


def check_same_tensors(base: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor], source: Path) -> None:
    """Refuse state dicts whose keys or shapes differ, naming the first offending key."""
    missing = sorted(set(base) - set(other))
    if missing:
        raise MarbleEvalError(f"{source}: lacks the base's key {missing[0]!r} ({len(missing)} missing); "
                              f"task arithmetic needs the same architecture")
    extra = sorted(set(other) - set(base))
    if extra:
        raise MarbleEvalError(f"{source}: key {extra[0]!r} is not in the base ({len(extra)} extra); "
                              f"task arithmetic needs the same architecture")
    for key in base:
        base_shape, other_shape = tuple(base[key].shape), tuple(other[key].shape)
        if base_shape != other_shape:
            raise MarbleEvalError(f"{source}: key {key!r} has shape {other_shape}, the base {base_shape}")


def task_arithmetic(base: Mapping[str, torch.Tensor], finetuned: list[Mapping[str, torch.Tensor]],
                    lam: float, sources: list[Path] | None = None) -> tuple[dict[str, torch.Tensor], int, int]:
    """Merge state dicts: returns (merged, n_float, n_copied). Float math in float64, stored in the base dtype.

    Non-float tensors must be equal in every input and are copied from the base.
    """
    sources = sources or [Path(f"finetuned[{i}]") for i in range(len(finetuned))]
    merged: dict[str, torch.Tensor] = {}
    n_float = n_copied = 0
    for key in base:
        base_tensor = base[key]
        if base_tensor.is_floating_point():
            delta = torch.zeros(base_tensor.shape, dtype=torch.float64)
            for state in finetuned:
                delta += state[key].to(torch.float64) - base_tensor.to(torch.float64)
            merged[key] = (base_tensor.to(torch.float64) + lam * delta).to(base_tensor.dtype).contiguous()
            n_float += 1
        else:
            for state, source in zip(finetuned, sources):
                if not torch.equal(state[key], base_tensor):
                    raise MarbleEvalError(f"{source}: non-float tensor {key!r} differs from the base's; "
                                          f"it cannot be interpolated")
            merged[key] = base_tensor.clone().contiguous()
            n_copied += 1
    return merged, n_float, n_copied


def _describe(model: ResolvedModel) -> dict[str, Any]:
    return {"model": model.spec, "directory": str(model.directory), "revision": model.revision,
            "fingerprint": fingerprint(model)}


def merge_checkpoints(base: ResolvedModel, finetuned: list[ResolvedModel], lam: float, output: Path) -> MergeReport:
    """Write the task-arithmetic merge of ``finetuned`` onto ``base`` with coefficient ``lam`` into ``output``."""
    output = Path(output)
    if not finetuned:
        raise MarbleEvalError("merge needs at least one --finetuned model")
    if not math.isfinite(lam):
        raise MarbleEvalError(f"--lambda must be a finite number, got {lam}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MarbleEvalError(f"{output}: exists and is not an empty directory; choose a new --output")
    for model in finetuned:
        check_same_config(base, model)
    base_tensors = CheckpointTensors(base)
    others = [CheckpointTensors(model) for model in finetuned]
    sources = [model.weight_files()[0] for model in finetuned]
    for tensors, source in zip(others, sources):
        check_same_tensors(base_tensors, tensors, source)
    merged, n_float, n_copied = task_arithmetic(base_tensors, others, lam, sources)

    staging = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(base.directory / "config.json", staging / "config.json")
    if (base.directory / "preprocessor_config.json").exists():
        shutil.copyfile(base.directory / "preprocessor_config.json", staging / "preprocessor_config.json")
    save_file(merged, str(staging / "model.safetensors"), metadata={"format": "pt"})
    provenance = {
        "method": "task arithmetic", "formula": FORMULA, "lambda": lam, "base": _describe(base),
        "finetuned": [_describe(model) for model in finetuned], "float_tensors": n_float,
        "copied_tensors": n_copied, "compute_dtype": "float64", "stored_dtype": "as in the base",
        "output_fingerprint": fingerprint(ResolvedModel(str(output), staging, None)),
        "marble_eval_version": __version__,
    }
    (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    if output.exists():
        output.rmdir()
    staging.rename(output)
    return MergeReport(output, n_float, n_copied, provenance)
