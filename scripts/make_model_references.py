"""Make tiny MuQ and Dasheng checkpoints with each model's own code and record their hidden states.

Runs OUTSIDE CI, in its own environment (the models' code pins an older stack):

    python3.11 -m venv /work/side-muq
    /work/side-muq/bin/pip install "transformers>=4.45,<5" && \\
        /work/side-muq/bin/pip install --no-deps muq==0.1.0 easydict einops x-clip torchaudio
    # torch itself from the main environment (a .pth file naming its site-packages); torchaudio's
    # compiled libraries moved out of torchaudio/lib: its MelSpectrogram is pure Python
    /work/side-muq/bin/python scripts/make_model_references.py --dasheng-code DIR/dasheng_model

DIR is a checkout of github.com/jimbozhang/hf_transformers_custom_model_dasheng (the Hugging Face
port of Dasheng). Fetched code is imported from where it lies and never copied into this repository.
Writes tests/data/reference_models/{muq,dasheng}/ (config, weights, hidden_states.npz); the tests
load those checkpoints through marble-eval and compare every hidden state.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference_models"


def reference_wave(seconds: float, rate: int) -> np.ndarray:
    """The deterministic test input (no RNG, so numpy versions cannot change it), float32 in [-1, 1]."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    wave = (0.45 * np.sin(2 * np.pi * 220.0 * t) + 0.25 * np.sin(2 * np.pi * 1375.0 * t + 0.5)
            + 0.15 * np.sin(2 * np.pi * 37.0 * t) * np.sin(2 * np.pi * 3100.0 * t)
            + 0.1 * np.sin(2 * np.pi * (300.0 + 900.0 * t) * t))
    return wave.astype(np.float32)


def _randomise_batch_norms(module, torch) -> None:
    """Running statistics away from (0, 1), so that the tests exercise them (seeded by the caller)."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            sub.running_mean.uniform_(-1.0, 1.0)
            sub.running_var.uniform_(0.5, 2.0)


def make_muq(out: Path) -> None:
    import torch

    spec = importlib.util.find_spec("muq")  # muq/__init__ also imports MuQ-MuLan (x_clip, torchvision): skip it
    package = types.ModuleType("muq")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["muq"] = package
    from muq.muq import MuQ

    # The field set of the released w2v2_config (wav2vec2-conformer-rope-large's), at tiny sizes.
    w2v2 = {"activation_dropout": 0.1, "adapter_kernel_size": 3, "adapter_stride": 2, "add_adapter": False,
            "apply_spec_augment": True, "architectures": ["Wav2Vec2ConformerForCTC"], "attention_dropout": 0.1,
            "bos_token_id": 1, "classifier_proj_size": 256, "codevector_dim": 768, "conformer_conv_dropout": 0.1,
            "contrastive_logits_temperature": 0.1, "conv_bias": True, "conv_depthwise_kernel_size": 31,
            "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
            "ctc_loss_reduction": "sum", "ctc_zero_infinity": False, "diversity_loss_weight": 0.1,
            "do_stable_layer_norm": True, "eos_token_id": 2, "feat_extract_activation": "gelu",
            "feat_extract_dropout": 0.0, "feat_extract_norm": "layer", "feat_proj_dropout": 0.1,
            "feat_quantizer_dropout": 0.0, "final_dropout": 0.1, "gradient_checkpointing": False,
            "hidden_act": "swish", "hidden_dropout": 0.1, "hidden_dropout_prob": 0.1, "hidden_size": 1024,
            "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-5, "layerdrop": 0.0,
            "mask_feature_length": 10, "mask_feature_min_masks": 0, "mask_feature_prob": 0.0,
            "mask_time_length": 10, "mask_time_min_masks": 2, "mask_time_prob": 0.05, "max_source_positions": 5000,
            "model_type": "wav2vec2-conformer", "num_adapter_layers": 3, "num_attention_heads": 4,
            "num_codevector_groups": 2, "num_codevectors_per_group": 320, "num_conv_pos_embedding_groups": 4,
            "num_conv_pos_embeddings": 16, "num_feat_extract_layers": 7, "num_hidden_layers": 24,
            "num_negatives": 100, "output_hidden_size": 1024, "pad_token_id": 0, "position_embeddings_type": "rotary",
            "proj_codevector_dim": 768, "rotary_embedding_base": 10000, "tdnn_dilation": [1, 2, 3, 1, 1],
            "tdnn_dim": [512, 512, 512, 512, 1500], "tdnn_kernel": [5, 3, 3, 1, 1], "torch_dtype": "float32",
            "transformers_version": "4.19.0.dev0", "use_weighted_layer_sum": False, "vocab_size": 32,
            "xvector_output_dim": 512}
    config = {"label_rate": 25, "num_codebooks": 1, "codebook_dim": 16, "codebook_size": 64,
              "features": ["melspec_2048"], "hop_length": 240, "n_mels": 128, "conv_dim": 8, "encoder_dim": 32,
              "encoder_depth": 4, "mask_hop": 0.4, "mask_prob": 0.6, "is_flash": False,
              "stat": {"melspec_2048_cnt": 14282760192, "melspec_2048_mean": 6.768444971712967,
                       "melspec_2048_std": 18.417922652295623},
              "w2v2_config": w2v2, "use_rvq_target": False, "use_vq_target": False, "use_encodec_target": False,
              "rvq_ckpt_path": None, "recon_loss_ratio": None, "resume_checkpoint": None, "rvq_n_codebooks": 8,
              "rvq_multi_layer_num": 1}
    torch.manual_seed(0)
    model = MuQ(config).eval()
    with torch.no_grad():
        _randomise_batch_norms(model, torch)
    model.save_pretrained(str(out))
    wave = torch.from_numpy(reference_wave(2.5, 24000))[None]
    with torch.no_grad():
        states = model(wave, output_hidden_states=True).hidden_states
    _save_states(out, states, seconds=2.5, rate=24000)


def make_dasheng(out: Path, code: Path) -> None:
    import torch

    sys.path.insert(0, str(code.parent))
    from dasheng_model.configuration_dasheng import DashengConfig
    from dasheng_model.feature_extraction_dasheng import DashengFeatureExtractor
    from dasheng_model.modeling_dasheng import DashengModel

    # 96-frame segments (0.96 s) so that the 2.5-s input spans three, the last one zero-padded.
    config = DashengConfig(name="dasheng-base", embed_dim=32, depth=3, num_heads=4, target_length=96)
    torch.manual_seed(0)
    model = DashengModel(config).eval()
    with torch.no_grad():
        _randomise_batch_norms(model, torch)
        bn = model.encoder.init_bn[1]
        bn.running_mean.uniform_(-60.0, -20.0)  # dB-scale statistics, as in the real checkpoints
        bn.running_var.uniform_(100.0, 400.0)
    model.save_pretrained(str(out), safe_serialization=True)
    extractor = DashengFeatureExtractor()
    extractor.save_pretrained(str(out))
    wave = reference_wave(2.5, 16000)
    features = extractor(wave, sampling_rate=16000)["input_values"]
    states = []
    encoder = model.encoder
    with torch.no_grad():
        def record(_module, _inputs, output):
            states.append(output)
        # The encoder's own forward, with hooks recording the input of each block and the final norm.
        handles = [block.register_forward_pre_hook(lambda _m, inputs: states.append(inputs[0]))
                   for block in encoder.blocks]
        handles.append(encoder.norm.register_forward_hook(record))
        last = model(features).hidden_states
        for handle in handles:
            handle.remove()
    # Hooks saw the flattened segments [(segments x batch), tokens, dim]: restore [batch, time, dim] as
    # the encoder does for its output, and cut to the frames of the unpadded input.
    segments_total = states[0].shape[0]
    tokens = last.shape[1]
    restored = [torch.reshape(state, (1, -1, state.shape[-1]))[:, :tokens] for state in states]
    assert torch.equal(restored[-1], last) and segments_total == 3
    _save_states(out, restored, seconds=2.5, rate=16000)


def _save_states(out: Path, states, seconds: float, rate: int) -> None:
    arrays = {f"state_{i}": state[0].detach().float().numpy() for i, state in enumerate(states)}
    np.savez_compressed(out / "hidden_states.npz", **arrays)
    (out / "reference.json").write_text(json.dumps({
        "input": f"scripts/make_model_references.py reference_wave({seconds}, {rate})",
        "hidden_states": len(states), "frames": int(states[0].shape[1]), "dim": int(states[0].shape[-1]),
    }, indent=2) + "\n")
    print(f"{out}: {len(states)} hidden states {tuple(states[0].shape)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dasheng-code", type=Path, help="the port's dasheng_model directory")
    parser.add_argument("--only", choices=["muq", "dasheng"], default=None)
    args = parser.parse_args()
    if args.only in (None, "muq"):
        make_muq(_fresh(OUT / "muq"))
    if args.only in (None, "dasheng"):
        if args.dasheng_code is None:
            parser.error("--dasheng-code is needed for the Dasheng reference")
        make_dasheng(_fresh(OUT / "dasheng"), args.dasheng_code)


def _fresh(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        path.unlink()
    return directory


if __name__ == "__main__":
    main()
