"""Fine-tuning on prompt -> response pairs: the LM trainer (training/loop.py) with another data
source and the loss on the response only, full (`lora.rank=0`) or LoRA (qwix adapters).

It is a `loop.Task`: the same loop, run-directory rules (run_guard, lock, fresh / allow_changes,
broken-checkpoint fallback), progress, metrics, TensorBoard, mesh and checkpoints as pretraining.
What differs:
- data: `data.train` / `data.eval` JSONL pairs, encoded once at start (data/pairs.py) into
  `<out_dir>/data/` (encoded records, bad_examples.txt, the audio-units cache) and fed through the
  Grain pipeline (`pipeline.pair_dataset`), targets only on the response and its EOS;
- weights: the base bundle's LM (`base`: a training run, converted model or tree). Full fine-tuning
  starts from it and trains everything. LoRA trains only the adapters (the train state's params and
  optimizer state are the adapter subtree); the base weights are frozen, passed to the step as an
  argument, never given optimizer state and never saved: `<out_dir>/checkpoints` holds adapters, and
  bundle.yaml names the base (`SpiritLM.from_checkpoint(out_dir)` merges them, bundle/load.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import flax.linen as nn
import jax

from spiritlm_jax.aot import CompileConfig
from spiritlm_jax.bundle import load_bundle, read_manifest, write_manifest
from spiritlm_jax.bundle.load import Bundle
from spiritlm_jax.bundle.manifest import BundleManifest
from spiritlm_jax.bundle.text_tokenizer import copy_tokenizer_files
from spiritlm_jax.bundle.train_layout import CHECKPOINTS_DIR
from spiritlm_jax.config import ConfigError, save_config
from spiritlm_jax.data import pairs
from spiritlm_jax.data.pipeline import batch_iterator, pair_dataset
from spiritlm_jax.model.config import LlamaConfig
from spiritlm_jax.model.llama import Llama
from spiritlm_jax.model.lora import LoraConfig, adapter_count, lora_model, split_adapters
from spiritlm_jax.model.sharding import param_shardings
from spiritlm_jax.run_guard import RunDirPolicy
from spiritlm_jax.training import loop
from spiritlm_jax.training.config import CheckpointConfig, MeshConfig, check_run_numbers
from spiritlm_jax.training.optim import OptimConfig
from spiritlm_jax.training.run_dir import RUN_POLICY
from spiritlm_jax.training.step import model_params

DATA_DIR = "data"  # encoded pairs, bad_examples.txt and the audio units cache, under out_dir


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    base: Optional[str] = None  # the model to fine-tune: a training run, converted model directory or tree (required)
    variant: Optional[str] = None  # base or expressive: the LM to use from a converted tree holding both
    data: pairs.PairDataConfig = pairs.PairDataConfig()
    lora: LoraConfig = LoraConfig()
    optim: OptimConfig = OptimConfig(lr=1e-3, warmup_steps=10, schedule="cosine", weight_decay=0.0)
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    steps: int = 200  # optimizer steps of the run
    log_every: int = 10  # metrics every N steps
    eval_every: int = 50  # held-out loss every N steps (0: never; needs data.eval)
    eval_batches: int = 4  # held-out batches per evaluation
    seed: int = 0  # adapter initialisation and dropout
    out_dir: str = "runs/finetune"  # the run directory (LoRA: adapters + a pointer to base; full: all weights)
    distributed: Literal["auto", "on", "off"] = "auto"  # multi-host set-up (see training/distributed.py)
    progress: bool = True  # progress bar on process 0
    model: Optional[LlamaConfig] = None  # from `base`; a config may state it (must equal base's; compile-only uses it)
    compile: CompileConfig = CompileConfig()  # compile.topology set: compile the step for that pod only (needs model.*)

    def __post_init__(self):
        check_run_numbers(self)


# The fine-tuner's files in a run directory (see training/run_dir.py RUN_POLICY).
FINETUNE_POLICY = RunDirPolicy(
    tool_files=RUN_POLICY.tool_files + (DATA_DIR,),
    shape_keys=RUN_POLICY.shape_keys + ("lora.rank", "lora.targets"),
    # the trainer's free keys but `init` (a fine-tuning run starts from `base`, which must not change)
    free_keys=tuple(k for k in RUN_POLICY.free_keys if k != "init"),
    checkpoints=CHECKPOINTS_DIR,
)


def resolve(cfg: FinetuneConfig) -> tuple[FinetuneConfig, Bundle]:
    """(cfg with `model` filled in from the base, the base bundle): config errors name the key."""
    if not cfg.base:
        raise ConfigError("base: give the model to fine-tune (a training run, converted model or tree)")
    if not cfg.data.train:
        raise ConfigError("data.train: give a JSONL file of prompt -> response examples")
    for split in ("train", "eval"):
        path = getattr(cfg.data, split)
        if path and not Path(path).is_file():
            raise ConfigError(f"data.{split}: {path} does not exist")
    try:
        bundle = load_bundle(cfg.base, variant=cfg.variant)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"base: {e}") from None
    model = bundle.lm_config
    if cfg.model is not None and cfg.model != model:
        raise ConfigError(f"model: differs from the base's LM config ({cfg.base}); leave it out or make it equal")
    if cfg.lora.enabled and adapter_count(cfg.lora, model) == 0:
        raise ConfigError(
            f"lora.targets: {cfg.lora.targets!r} matches no projection (layers/attn/q|k|v|o, layers/mlp/gate|up|down)"
        )
    if cfg.data.seq_len > model.max_seq_len:
        raise ConfigError(f"data.seq_len {cfg.data.seq_len} exceeds the base model's max_seq_len {model.max_seq_len}")
    return dataclasses.replace(cfg, model=model), bundle


def _encode(cfg: FinetuneConfig, bundle: Bundle, split: str, process_index: int) -> Optional[Path]:
    """Encode data.<split> into <out_dir>/data/<split>.jsonl (bad examples reported); None without one."""
    src = getattr(cfg.data, split)
    if not src:
        return None
    d = Path(cfg.out_dir) / DATA_DIR
    d = d if process_index == 0 else d / f"process{process_index}"
    speech = bundle.speech_tokenizer
    cache = pairs.UnitCache(
        d / "units_cache.json", speech.encode_string if speech is not None else None, tag=str(bundle.path)
    )
    try:
        enc = pairs.encode_pairs(src, bundle.tokenizer, cache, cfg.data.seq_len)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.{split}: {e}") from None
    cache.save()
    n_bad = pairs.write_bad_report(d / f"bad_examples_{split}.txt", enc.bad)
    if n_bad:
        loop._log(f"data.{split}: {n_bad} bad example(s) skipped, see {d / f'bad_examples_{split}.txt'}")
    if not enc.records:
        raise ConfigError(f"data.{split}: no usable example in {src} (see {d / f'bad_examples_{split}.txt'})")
    path = d / f"{split}.jsonl"
    pairs.write_encoded(path, enc.records)
    return path


def _train_iterator(bundle: Bundle):
    def make(cfg: FinetuneConfig, process_index: int, process_count: int):
        path = _encode(cfg, bundle, "train", process_index)
        d = cfg.data
        try:
            ds = pair_dataset([path], d.seed, d.shuffle, d.num_epochs, process_index, process_count)
        except ValueError as e:
            raise ConfigError(f"data.train: {e}") from None
        return batch_iterator(ds, d)

    return make


def _eval_batches(bundle: Bundle):
    def make(cfg: FinetuneConfig, n: int, process_index: int, process_count: int) -> list:
        if n <= 0:
            return []
        path = _encode(cfg, bundle, "eval", process_index)
        if path is None:
            return []
        d = dataclasses.replace(cfg.data, shuffle=False, num_epochs=None)
        try:
            it = batch_iterator(pair_dataset([path], d.seed, False, None, process_index, process_count), d)
        except ValueError as e:
            raise ConfigError(f"data.eval: {e}") from None
        return [next(it) for _ in range(n)]

    return make


def _adapters(model, rng, seq_len: int):
    """The LoRA-wrapped model's adapter parameters (boxed): what LoRA trains. Created without the
    logical-axis rules (qwix re-boxes the adapters from the kernel's metadata and would constrain
    them with the kernel's rank); the jit's out_shardings place them."""
    with nn.logical_axis_rules(()):
        return split_adapters(model_params(model, rng, seq_len))[1]


def _frozen_shapes(cfg: FinetuneConfig, mesh):
    """The base weights as placed ShapeDtypeStructs, and their shardings (compile-only mode)."""
    abstract = jax.eval_shape(lambda: model_params(Llama(cfg.model), jax.random.PRNGKey(0)))
    shardings = param_shardings(abstract, mesh)
    placed = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(abstract), shardings
    )
    return placed, shardings


def _frozen(bundle: Bundle):
    def make(cfg: FinetuneConfig, mesh):
        _, shardings = _frozen_shapes(cfg, mesh)
        return jax.device_put(bundle.params, shardings), shardings

    return make


def _write_run_dir(bundle: Bundle):
    """config.yaml, the base's tokenizer files, bundle.yaml: the base's speech tokenizer and vocoder
    referenced (absolute paths); a LoRA run also names its base."""

    def write(cfg: FinetuneConfig, out_dir: Path) -> BundleManifest:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        base = read_manifest(bundle.path)
        copy_tokenizer_files(bundle.path / base.tokenizer, out_dir)
        manifest = BundleManifest(
            expressive=bundle.expressive,
            lm=CHECKPOINTS_DIR,
            tokenizer=".",
            speech_tokenizer=str((bundle.path / base.speech_tokenizer).resolve()) if base.speech_tokenizer else None,
            vocoder=str((bundle.path / base.vocoder).resolve()) if base.vocoder else None,
            base=str(bundle.path.resolve()) if cfg.lora.enabled else None,
        )
        write_manifest(out_dir, manifest)
        return manifest

    return write


def finetune_task(bundle: Optional[Bundle], lora: LoraConfig) -> loop.Task:
    """The loop.Task of a fine-tuning run on `bundle` (full when lora.rank == 0)."""
    common = dict(
        policy=FINETUNE_POLICY,
        check=lambda cfg: None,  # resolve() checked the base and the data keys
        train_iterator=_train_iterator(bundle),
        eval_batches=_eval_batches(bundle),
        write_run_dir=_write_run_dir(bundle),
        init_seed=lambda cfg: cfg.seed,
    )
    if not lora.enabled:
        return loop.Task(
            model=lambda cfg: Llama(cfg.model),
            start_params=lambda cfg, shardings: (jax.device_put(bundle.params, shardings), f"base {bundle.path}"),
            **common,
        )
    return loop.Task(
        model=lambda cfg: lora_model(Llama(cfg.model), cfg.lora),
        eval_model=lambda cfg: lora_model(Llama(cfg.model), dataclasses.replace(cfg.lora, dropout=0.0)),
        trainable=_adapters,
        start_params=lambda cfg, shardings: None,  # fresh adapters (B = 0: the base model's outputs)
        frozen=_frozen(bundle),
        frozen_shapes=_frozen_shapes,
        dropout_seed=lambda cfg: cfg.seed if cfg.lora.dropout > 0 else None,
        export_hint=lambda out_dir: (
            f"python -m spiritlm_jax.merge --src {out_dir} --out MERGED, then "
            "python tools/convert_weights/llama_to_hf.py --src MERGED --out HF_DIR"
        ),
        **common,
    )


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune according to `cfg` (the base is loaded once); returns the loop's summary. With
    compile.topology and model.* it only compiles the step for that pod (no weights or data are read)."""
    if cfg.compile.topology:  # the step's shapes come from model.*: neither base nor data is read
        if cfg.model is None:
            raise ConfigError("compile.topology: give model.* (e.g. --config with a model section); no base is read")
        return loop.run(cfg, finetune_task(None, cfg.lora))
    cfg, bundle = resolve(cfg)
    return loop.run(cfg, finetune_task(bundle, cfg.lora))
