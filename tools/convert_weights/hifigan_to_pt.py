"""Export a vocoder to the reference's release format: generator.pt + config.json (+ speakers.txt / styles.txt).

    python tools/convert_weights/hifigan_to_pt.py --src runs/vocoder --out release/   # a train_vocoder run
    python tools/convert_weights/hifigan_to_pt.py --src spiritlm_jax/data/demo/vocoder --out release/  # a vocoder dir

The reverse of hifigan_from_pt.py, so the reference's CodeGenerator (speech-resynthesis / Spirit LM)
can load what `python -m spiritlm_jax.train_vocoder` trained. generator.pt is {"generator": state
dict} with the official key names (`dict`, `f0_dict`, `style_dict`, `spkr`, `style`, `conv_pre`,
`ups.{i}`, `resblocks.{j}.convs{1,2}.{k}`, `conv_post` as weight_g / weight_v / bias (torch
weight_norm, dim 0), `dur_predictor.{conv1.0, ln1, conv2.0, ln2, proj}` plain). From a training run
the generator's own weight_g / weight_v are written (latest checkpoint), and hifigan_from_pt.py folds
them back to exactly the weights of the run's vocoder/ (tested: identical audio). From a vocoder
directory (folded weights) weight_v = w and weight_g = ||w||. config.json has the generator fields
hifigan_from_pt.py reads, model_in_dim, and the training settings of a run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.config import load_config, to_dict  # noqa: E402
from spiritlm_jax.speech.vocoder import Vocoder  # noqa: E402
from spiritlm_jax.vocoder_training import weight_norm as wn  # noqa: E402
from spiritlm_jax.vocoder_training.config import VocoderTrainConfig  # noqa: E402
from spiritlm_jax.vocoder_training.loop import VOCODER_DIR, latest_state  # noqa: E402
from tools.convert_weights.common import ConversionError, converter_main  # noqa: E402


def _conv_wn(sd: dict, key: str, name: str, conv: dict) -> None:
    """A weight-normed conv (our weight_v/weight_g, or a folded kernel) -> torch weight_g/weight_v/bias."""
    if "weight_v" in conv:
        v = wn.to_torch_layout(name, np.asarray(conv["weight_v"], np.float32))
        g = np.asarray(conv["weight_g"], np.float32)
    else:
        v = wn.to_torch_layout(name, np.asarray(conv["kernel"], np.float32))
        g = np.sqrt((v.astype(np.float64) ** 2).sum(axis=(1, 2))).astype(np.float32)
    sd[key + ".weight_v"] = v
    sd[key + ".weight_g"] = g.reshape(-1, 1, 1)
    sd[key + ".bias"] = np.asarray(conv["bias"], np.float32)


def _conv_plain(sd: dict, key: str, conv: dict) -> None:
    sd[key + ".weight"] = np.ascontiguousarray(np.asarray(conv["kernel"], np.float32).transpose(2, 1, 0))
    sd[key + ".bias"] = np.asarray(conv["bias"], np.float32)


def state_dict(params: dict, cfg) -> dict[str, np.ndarray]:
    """Our CodeGenerator params (weight-normed or folded) -> the official state dict (numpy)."""
    sd: dict[str, np.ndarray] = {}
    for name in ("dict", "f0_dict", "style_dict", "spkr", "style"):
        if name in params:
            sd[f"{name}.weight"] = np.asarray(params[name]["embedding"], np.float32)
    if "dur_predictor" in params:
        d = params["dur_predictor"]
        _conv_plain(sd, "dur_predictor.conv1.0", d["conv1"])
        _conv_plain(sd, "dur_predictor.conv2.0", d["conv2"])
        for ln in ("ln1", "ln2"):
            sd[f"dur_predictor.{ln}.weight"] = np.asarray(d[ln]["scale"], np.float32)
            sd[f"dur_predictor.{ln}.bias"] = np.asarray(d[ln]["bias"], np.float32)
        sd["dur_predictor.proj.weight"] = np.ascontiguousarray(np.asarray(d["proj"]["kernel"], np.float32).T)
        sd["dur_predictor.proj.bias"] = np.asarray(d["proj"]["bias"], np.float32)
    g = params["generator"]
    _conv_wn(sd, "conv_pre", "conv_pre", g["conv_pre"])
    n_k = len(cfg.resblock_kernel_sizes)
    for i in range(len(cfg.upsample_rates)):
        _conv_wn(sd, f"ups.{i}", f"ups_{i}", g[f"ups_{i}"])
        for j, rd in enumerate(cfg.resblock_dilation_sizes):
            r = i * n_k + j
            for m in range(len(rd)):
                for c in ("convs1", "convs2"):
                    _conv_wn(sd, f"resblocks.{r}.{c}.{m}", c, g[f"resblocks_{r}"][f"{c}_{m}"])
    _conv_wn(sd, "conv_post", "conv_post", g["conv_post"])
    return sd


def config_json(cfg, train: VocoderTrainConfig | None = None) -> dict:
    """The release's config.json: generator fields (hifigan_from_pt.config_from_json reads them) + training."""
    out = {
        "resblock": "1",
        "num_embeddings": cfg.num_embeddings,
        "embedding_dim": cfg.embedding_dim,
        "model_in_dim": cfg.model_in_dim,
        "upsample_rates": list(cfg.upsample_rates),
        "upsample_kernel_sizes": list(cfg.upsample_kernel_sizes),
        "upsample_initial_channel": cfg.upsample_initial_channel,
        "resblock_kernel_sizes": list(cfg.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in cfg.resblock_dilation_sizes],
        "code_hop_size": cfg.code_hop_size,
        "sampling_rate": cfg.sampling_rate,
        "multispkr": cfg.multispkr,
        "num_speakers": cfg.num_speakers,
        "multistyle": cfg.multistyle,
        "num_styles": cfg.num_styles,
    }
    if cfg.num_f0_tokens:
        out.update(num_f0_tokens=cfg.num_f0_tokens, f0_hop_size=cfg.f0_hop_size)
    if cfg.num_style_tokens:
        out.update(num_style_tokens=cfg.num_style_tokens, style_hop_size=cfg.style_hop_size)
    if cfg.dur_predictor_params is not None:
        out["dur_predictor_params"] = dataclasses.asdict(cfg.dur_predictor_params)
        out["dur_prediction_weight"] = train.loss.duration if train is not None else 1.0
    if train is not None:
        m, o = train.mel, train.optim
        out.update(
            segment_size=train.data.segment_frames * cfg.hop,
            batch_size=train.data.batch_size,
            learning_rate=o.lr,
            adam_b1=o.b1,
            adam_b2=o.b2,
            lr_decay=o.lr_decay,
            seed=train.seed,
            num_mels=m.n_mels,
            n_fft=m.n_fft,
            hop_size=m.hop,
            win_size=m.win,
            fmin=m.fmin,
            fmax=m.fmax if m.fmax is not None else cfg.sampling_rate // 2,
        )
    return out


def export(src: str | Path, out: str | Path) -> Path:
    """A train_vocoder run directory or a vocoder directory -> generator.pt + config.json (+ lists)."""
    import torch

    src, out = Path(src), Path(out)
    if (src / "checkpoints").is_dir():
        train = load_config(VocoderTrainConfig, src / "config.yaml")
        state, _ = latest_state(src)
        params, cfg, lists_dir = state["g"], train.model, src / VOCODER_DIR
    elif (src / "config.yaml").is_file() and (src / "params").is_dir():
        voc = Vocoder.load(src)
        train, params, cfg, lists_dir = None, voc.params, voc.cfg, src
    else:
        raise ConversionError(f"{src} is neither a train_vocoder run (checkpoints/) nor a vocoder directory")
    if (out / "generator.pt").exists():
        raise FileExistsError(f"{out / 'generator.pt'} already exists; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: torch.from_numpy(np.array(v, np.float32, copy=True)) for k, v in state_dict(params, cfg).items()}
    torch.save({"generator": sd}, out / "generator.pt")
    (out / "config.json").write_text(json.dumps(config_json(cfg, train), indent=2) + "\n")
    for name in ("speakers.txt", "styles.txt"):
        if (lists_dir / name).is_file():
            shutil.copy(lists_dir / name, out / name)
    if train is not None:
        (out / "train_config.json").write_text(json.dumps(to_dict(train), indent=2) + "\n")
    return out


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # a train_vocoder run directory (checkpoints/) or a vocoder directory (config.yaml + params/)
    out: str  # output folder for generator.pt + config.json (+ speakers.txt, styles.txt)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: export(a.src, a.out))


if __name__ == "__main__":
    sys.exit(main())
