"""Import a whole reference checkpoint tree ($SPIRITLM_CHECKPOINTS_DIR, see docs/reference.md) in one command.

    python tools/convert_weights/spiritlm_checkpoints.py --src $SPIRITLM_CHECKPOINTS_DIR --out converted/

Whatever subset of the tree exists is converted; the rest is reported as missing:

    source (under --src)                                   -> output (under --out)
    speech_tokenizer/hubert_25hz/mhubert_base_25hz.pt (+ L11_quantizer_500.pt)
                                                           -> speech_tokenizer/   (hubert.yaml, quantizer.yaml, params/)
    torchfcpe's bundled FCPE weights (or --fcpe PT)        -> speech_tokenizer/fcpe/      (only with the F0 VQ-VAE)
    speech_tokenizer/vqvae_f0_quantizer/                   -> speech_tokenizer/f0_vqvae/
    speech_tokenizer/style_encoder_w2v2/                   -> speech_tokenizer/style/
    speech_tokenizer/hifigan_spiritlm_base/                -> vocoder/base/
    speech_tokenizer/hifigan_spiritlm_expressive_w2v2/     -> vocoder/expressive/
    spiritlm_model/spirit-lm-{base,expressive}-7b/         -> spirit-lm-{base,expressive}-7b/

Each converted LM folder is a bundle: its bundle.yaml records EXPRESSIVE (the expressive-7b folder
is EXPRESSIVE) and points (relative paths) at the tree's speech tokenizer and the vocoder of its kind,
so it loads with `SpiritLM.from_checkpoint("converted/spirit-lm-expressive-7b")` (or the tree root
with `variant=`). The manifests are rewritten at the end of every run, so a rerun that adds a
vocoder updates them.

Each component is converted into a temporary folder and moved into place only when complete, so an
interrupted run loses nothing already converted and a rerun skips what exists. One failing component
is reported and the others still run; the exit status is 1 when any failed. A summary goes to
<out>/spiritlm_tree.json.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.bundle import write_bundle_manifest  # noqa: E402
from spiritlm_jax.bundle.load import HUBERT_MARKER, TREE_MANIFEST  # noqa: E402
from spiritlm_jax.bundle.manifest import relative_to  # noqa: E402
from spiritlm_jax.config import run_cli  # noqa: E402

LM_KINDS = {"lm_base": "base", "lm_expressive": "expressive"}  # component -> vocoder/<kind>, EXPRESSIVE or not


@dataclasses.dataclass
class Component:
    name: str
    sources: tuple[str, ...]  # required paths under --src
    output: str  # path under --out
    convert: Callable[[list[Path], Path], None]  # (source paths, fresh output dir)
    done_marker: str  # a file under the output that exists only when the component is complete


def _hubert(layer: int):
    def run(src: list[Path], out: Path) -> None:
        from tools.convert_weights import hubert_from_fairseq

        quantizer = src[0].parent / "L11_quantizer_500.pt"
        hubert_from_fairseq.convert(src[0], quantizer if quantizer.is_file() else None, out, output_layer=layer)

    return run


def _fcpe(pt: Optional[str]):
    def run(src: list[Path], out: Path) -> None:
        from tools.convert_weights import fcpe_from_torchfcpe

        fcpe_from_torchfcpe.convert(pt or fcpe_from_torchfcpe.bundled_checkpoint(), out)

    return run


def _f0_vqvae(trust_pickle: bool):
    def run(src: list[Path], out: Path) -> None:
        from tools.convert_weights import f0_vqvae_from_pt

        f0_vqvae_from_pt.convert(src[0], out, trust_pickle=trust_pickle)

    return run


def _style(src: list[Path], out: Path) -> None:
    from tools.convert_weights import style_from_hf

    style_from_hf.convert(src[0], out)


def _vocoder(src: list[Path], out: Path) -> None:
    from tools.convert_weights import hifigan_from_pt

    hifigan_from_pt.convert(src[0], out)


def _llama(dtype: str, expressive: bool):
    def run(src: list[Path], out: Path) -> None:
        from tools.convert_weights import llama_from_hf

        llama_from_hf.convert(src[0], out, dtype=dtype, expressive=expressive)

    return run


def components(
    fcpe_pt: Optional[str] = None, dtype: str = "bfloat16", trust_pickle: bool = False, hubert_layer: int = 11
) -> list[Component]:
    st = "speech_tokenizer"
    return [
        Component("hubert", (f"{st}/hubert_25hz/mhubert_base_25hz.pt",), st, _hubert(hubert_layer), "hubert.yaml"),
        Component(
            "f0_vqvae", (f"{st}/vqvae_f0_quantizer",), f"{st}/f0_vqvae", _f0_vqvae(trust_pickle), "f0_vqvae.yaml"
        ),
        # FCPE is not in the tree (the reference loads torchfcpe's bundled model); it is needed with the VQ-VAE.
        Component("fcpe", (f"{st}/vqvae_f0_quantizer",), f"{st}/fcpe", _fcpe(fcpe_pt), "fcpe.yaml"),
        Component("style", (f"{st}/style_encoder_w2v2",), f"{st}/style", _style, "style.yaml"),
        Component("vocoder_base", (f"{st}/hifigan_spiritlm_base",), "vocoder/base", _vocoder, "config.yaml"),
        Component(
            "vocoder_expressive",
            (f"{st}/hifigan_spiritlm_expressive_w2v2",),
            "vocoder/expressive",
            _vocoder,
            "config.yaml",
        ),
        Component(
            "lm_base", ("spiritlm_model/spirit-lm-base-7b",), "spirit-lm-base-7b", _llama(dtype, False), "config.yaml"
        ),
        Component(
            "lm_expressive",
            ("spiritlm_model/spirit-lm-expressive-7b",),
            "spirit-lm-expressive-7b",
            _llama(dtype, True),
            "config.yaml",
        ),
    ]


def _move_into(tmp: Path, dest: Path, marker: str) -> None:
    """Move the converted files into `dest` (which may already hold other components' subfolders),
    the completion marker last."""
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted((p.name for p in tmp.iterdir()), key=lambda n: n == marker)
    for name in names:
        if (dest / name).exists():
            raise FileExistsError(f"{dest / name} already exists (left by an interrupted run?); remove it and rerun")
        shutil.move(str(tmp / name), str(dest / name))
    tmp.rmdir()


def convert_tree(
    src,
    out,
    only: Optional[list[str]] = None,
    fcpe_pt: Optional[str] = None,
    dtype: str = "bfloat16",
    trust_pickle: bool = False,
    hubert_layer: int = 11,
    log=print,
) -> dict:
    """Convert every component present under `src`; returns (and writes) the summary."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"checkpoint tree {src} does not exist (expected $SPIRITLM_CHECKPOINTS_DIR)")
    comps = components(fcpe_pt, dtype, trust_pickle, hubert_layer)
    names = [c.name for c in comps]
    for name in only or []:
        if name not in names:
            raise ValueError(f"unknown component {name!r}; choose from {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / TREE_MANIFEST
    summary = json.loads(manifest.read_text()) if manifest.is_file() else {"components": {}}
    summary["source"] = str(src.absolute())
    for c in comps:
        if only and c.name not in only:
            continue
        paths = [src / s for s in c.sources]
        dest = out / c.output
        entry = {"sources": [str(p) for p in paths], "output": c.output}
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            entry["status"] = "missing"
            entry["detail"] = f"not in the tree: {', '.join(missing)}"
            log(f"[{c.name}] missing: {', '.join(missing)}")
        elif (dest / c.done_marker).exists():
            entry["status"] = "exists"
            log(f"[{c.name}] already converted in {dest}: skipped")
        else:
            tmp = out / ".partial" / c.name
            if tmp.exists():
                shutil.rmtree(tmp)  # debris of an interrupted run of this component
            tmp.parent.mkdir(parents=True, exist_ok=True)
            log(f"[{c.name}] converting {', '.join(c.sources)} -> {c.output} ...")
            t0 = time.perf_counter()
            try:
                c.convert(paths, tmp)
                _move_into(tmp, dest, c.done_marker)
            except Exception as e:  # noqa: BLE001  one bad component must not stop the others
                entry["status"] = "failed"
                entry["detail"] = f"{type(e).__name__}: {e}"
                log(f"[{c.name}] FAILED: {e}")
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                entry["status"] = "converted"
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                log(f"[{c.name}] done in {entry['seconds']} s")
        summary["components"][c.name] = entry
        manifest.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out / ".partial", ignore_errors=True)
    _write_lm_manifests(out, {c.name: c.output for c in comps})
    return summary


def _write_lm_manifests(out: Path, outputs: dict[str, str]) -> None:
    """bundle.yaml of each converted LM: EXPRESSIVE by its kind, the tree's speech tokenizer and vocoder."""
    speech = out / "speech_tokenizer"
    for name, kind in LM_KINDS.items():
        lm = out / outputs[name]
        if not (lm / "config.yaml").is_file():
            continue
        vocoder = out / "vocoder" / kind
        write_bundle_manifest(
            lm,
            expressive=kind == "expressive",
            speech_tokenizer=relative_to(speech, lm) if (speech / HUBERT_MARKER).is_file() else None,
            vocoder=relative_to(vocoder, lm) if (vocoder / "config.yaml").is_file() else None,
        )


@dataclasses.dataclass(frozen=True)
class TreeArgs:
    src: str  # the reference checkpoint tree ($SPIRITLM_CHECKPOINTS_DIR)
    out: str  # output directory (reruns skip what is already converted)
    only: Optional[list[str]] = None  # convert only this component (repeatable)
    fcpe: Optional[str] = None  # FCPE checkpoint (default: the one torchfcpe ships)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # parameter dtype of the LMs (float32 doubles their size)
    trust_pickle: bool = False  # read the F0 VQ-VAE model.pt with torch's full unpickler (a file you trust)
    hubert_layer: int = 11  # HuBERT output layer (1-based; Spirit LM: 11)


def main(argv=None) -> int:
    return run_cli(
        TreeArgs, argv, "python tools/convert_weights/spiritlm_checkpoints.py", _convert_and_report, description=__doc__
    )


def _convert_and_report(args: TreeArgs) -> int:
    try:
        summary = convert_tree(
            args.src, args.out, args.only, args.fcpe, args.dtype, args.trust_pickle, args.hubert_layer
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    states = [e["status"] for e in summary["components"].values()]
    print(
        f"{states.count('converted')} converted, {states.count('exists')} already there, "
        f"{states.count('missing')} missing, {states.count('failed')} failed; see {Path(args.out) / TREE_MANIFEST}"
    )
    return 1 if "failed" in states else 0


if __name__ == "__main__":
    sys.exit(main())
