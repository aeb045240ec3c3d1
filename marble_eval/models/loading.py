"""The one loading path of every family: an explicit transformers class, float32, every weight accounted for.

Each family adapter builds its config, then calls ``load_pretrained`` (which refuses a
checkpoint with a missing, unexpected or wrongly shaped weight, naming the key) and
``model_info`` (the one builder of ModelInfo). Keys a family knows to be harmless, e.g.
a classification head the base model does not have, are allowed by explicit patterns.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import PretrainedConfig, PreTrainedModel

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import ModelInfo
from marble_eval.models.catalog import catalog_entry
from marble_eval.models.hub import ResolvedModel, fingerprint

# Bookkeeping fields of config.json that must not reach a config class built by hand.
BOOKKEEPING_FIELDS = ("architectures", "model_type", "auto_map", "transformers_version", "_name_or_path",
                      "torch_dtype", "dtype")


def build_config(config_class: type[PretrainedConfig], raw: dict[str, Any], **overrides: Any) -> PretrainedConfig:
    """A config of ``config_class`` from a config.json dict, bookkeeping fields dropped."""
    kept = {key: value for key, value in raw.items() if key not in BOOKKEEPING_FIELDS}
    kept.update(overrides)
    return config_class.from_dict(kept)


def preprocessor_config(model: ResolvedModel) -> dict[str, Any] | None:
    """The parsed preprocessor_config.json, or None when the checkpoint has none."""
    path = model.directory / "preprocessor_config.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MarbleEvalError(f"{path}: invalid JSON at line {exc.lineno}; fix or re-download it") from None


def _not_allowed(keys: list[str], allowed: tuple[str, ...]) -> list[str]:
    return sorted(key for key in keys if not any(fnmatchcase(key, pattern) for pattern in allowed))


def _weights_name(model: ResolvedModel) -> str:
    files = model.weight_files()
    return str(files[0]) if len(files) == 1 else f"{model.directory} ({len(files)} weight files)"


def load_pretrained(model_class: type[PreTrainedModel], model: ResolvedModel, config: PretrainedConfig,
                    family: str, allowed_missing: tuple[str, ...] = (),
                    allowed_unexpected: tuple[str, ...] = ()) -> PreTrainedModel:
    """``model_class.from_pretrained`` in float32, refusing any weight the checkpoint lacks, adds or mis-shapes.

    transformers only warns about such keys (missing ones stay random), which would silently
    benchmark a partly random model. ``allowed_missing`` / ``allowed_unexpected`` are fnmatch
    patterns of the keys a family knows to be harmless (as transformers reports them).
    """
    check_weight_files(model)
    module, loading = model_class.from_pretrained(
        str(model.directory), config=config, dtype=torch.float32, use_safetensors=model.uses_safetensors(),
        weights_only=True, output_loading_info=True, ignore_mismatched_sizes=True,
    )
    source, what = _weights_name(model), model_class.__name__
    hint = f"it is incomplete or not a {family!r} checkpoint (pass --family with the right one)"
    missing = _not_allowed(loading["missing_keys"], allowed_missing)
    if missing:
        raise MarbleEvalError(f"{source}: missing weight {missing[0]!r} ({len(missing)} missing) needed by {what}; "
                              f"{hint}")
    unexpected = _not_allowed(loading["unexpected_keys"], allowed_unexpected)
    if unexpected:
        raise MarbleEvalError(f"{source}: unexpected weight {unexpected[0]!r} ({len(unexpected)} unexpected), not "
                              f"in {what}; {hint}")
    mismatched = sorted(loading["mismatched_keys"])
    if mismatched:
        key, saved, expected = mismatched[0]
        raise MarbleEvalError(f"{source}: weight {key!r} has shape {tuple(saved)} but config.json makes it "
                              f"{tuple(expected)} ({len(mismatched)} mismatched); config.json and the weights "
                              f"do not belong together")
    if loading.get("error_msgs"):
        raise MarbleEvalError(f"{source}: cannot load into {what}: {str(loading['error_msgs'][0]).splitlines()[0]}")
    return module.float()


def model_info(model: ResolvedModel, module: torch.nn.Module, family: str, sample_rate: int,
               extra: dict[str, Any], dim: int | None = None, fixed_window_seconds: float | None = None,
               n_hidden_states: int | None = None, native_window_seconds: float | None = None) -> ModelInfo:
    """The ModelInfo of a loaded checkpoint: L = layers + 1 and D = hidden size unless given or a pooling widens it.

    The weights' licence comes from the catalog when the model is a known hub id or built-in name (None
    otherwise); the native window is the family's, else the fixed input length, else the catalog's.
    """
    config = getattr(module, "config", None)
    entry = catalog_entry(model.spec)
    return ModelInfo(
        model_id=model.spec, family=family, sample_rate=int(sample_rate),
        n_hidden_states=n_hidden_states or config.num_hidden_layers + 1, dim=dim or config.hidden_size,
        n_parameters=sum(p.numel() for p in module.parameters()), fingerprint=fingerprint(model),
        revision=model.revision, fixed_window_seconds=fixed_window_seconds,
        native_window_seconds=native_window_seconds or fixed_window_seconds
        or (entry.native_window_seconds if entry else None),
        licence=entry.licence if entry else None, extra=dict(extra),
    )


def check_weight_files(model: ResolvedModel) -> None:
    """Refuse a truncated or corrupt weights file in one line naming it (before transformers reads it).

    safetensors headers are checked against the file's size; a torch.save file (a zip archive) must
    still have its central directory, which truncation cuts off.
    """
    for path in model.weight_files():
        if path.suffix == ".safetensors":
            _open_safetensors(path).__exit__(None, None, None)
        else:
            _check_torch_archive(path)


def _check_torch_archive(path: Path) -> None:
    with open(path, "rb") as handle:
        is_archive = handle.read(4) == b"PK\x03\x04"
    if is_archive and not zipfile.is_zipfile(path):
        raise MarbleEvalError(f"{path}: not a readable torch file (its zip directory is missing); it is truncated "
                              f"or corrupt, download it again")


def _open_safetensors(path: Path) -> Any:
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        return handle.__enter__()
    except (SafetensorError, OSError) as exc:
        raise MarbleEvalError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]}); it is "
                              f"truncated or corrupt, download it again") from None


def read_safetensors(paths: list[Path], keep: tuple[str, ...] = ("*",)) -> dict[str, torch.Tensor]:
    """The tensors of safetensors files whose names match a ``keep`` pattern (others are never read)."""
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        handle = _open_safetensors(path)
        try:
            for key in handle.keys():
                if any(fnmatchcase(key, pattern) for pattern in keep):
                    state[key] = handle.get_tensor(key)
        except SafetensorError as exc:
            raise MarbleEvalError(f"{path}: cannot read tensor ({str(exc).splitlines()[0]}); it is corrupt, "
                                  f"download it again") from None
        finally:
            handle.__exit__(None, None, None)
    return state


def read_torch_tensors(path: Path) -> Any:
    """A torch.save file read with weights_only=True: tensors and plain containers, never arbitrary objects."""
    _check_torch_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise MarbleEvalError(f"{path}: not a plain tensor file ({str(exc).splitlines()[0][:160]}); only tensors "
                              f"are loaded (weights_only), never pickled objects") from None


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, family: str,
                      allowed_missing: tuple[str, ...] = (), allowed_unexpected: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module`` (float32), refusing missing, unexpected or mis-shaped weights by name.

    The refusals of ``load_pretrained`` for modules that are not a transformers class as a whole
    (MuQ, MusicFM, Dasheng) or that are one part of a bigger checkpoint (an audio tower).
    """
    hint = f"it is incomplete or not a {family!r} checkpoint (pass --family with the right one)"
    expected = module.state_dict()
    missing = _not_allowed([key for key in expected if key not in state], allowed_missing)
    if missing:
        raise MarbleEvalError(f"{source}: missing weight {missing[0]!r} ({len(missing)} missing) needed by "
                              f"{type(module).__name__}; {hint}")
    unexpected = _not_allowed([key for key in state if key not in expected], allowed_unexpected)
    if unexpected:
        raise MarbleEvalError(f"{source}: unexpected weight {unexpected[0]!r} ({len(unexpected)} unexpected), not "
                              f"in {type(module).__name__}; {hint}")
    mismatched = sorted(key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape))
    if mismatched:
        key = mismatched[0]
        raise MarbleEvalError(f"{source}: weight {key!r} has shape {tuple(state[key].shape)} but the config makes it "
                              f"{tuple(expected[key].shape)} ({len(mismatched)} mismatched); config and weights do "
                              f"not belong together")
    module.load_state_dict({key: state[key].float() if state[key].is_floating_point() else state[key]
                            for key in expected if key in state}, strict=False)
    module.float()
