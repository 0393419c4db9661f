"""`python -m spiritlm_jax.generate`: continue interleaved text/speech prompts from a checkpoint.

    python -m spiritlm_jax.generate --checkpoint runs/demo --text "Please enter your" --output-modality text
    python -m spiritlm_jax.generate --checkpoint runs/demo --speech in.wav --output-modality arbitrary
    python -m spiritlm_jax.generate --checkpoint DIR --prompt "[Text]hello[Speech][Hu3]" --max-new-tokens 50
    python -m spiritlm_jax.generate --checkpoint DIR --text "Once" --do-sample --temperature 0.8 --top-p 0.95

Generation options are transformers GenerationConfig fields with its defaults (the reference's): greedy,
max_length 20 (prompt included) unless max_new_tokens is set, top_k 50 when sampling.

The prompt is `inputs`, an ordered list of "text:..." / "speech:PATH" items; `--text A --speech b.wav
--text C` is shorthand for them, in the order given. Text outputs are printed; speech outputs are
written to `out` (out.wav, out_1.wav, ...); they need a vocoder (`vocoder`, or <checkpoint>/vocoder).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

from spiritlm_jax.config import ConfigError, parse_cli, run_cli
from spiritlm_jax.inference import DEFAULT_SPEAKER, GenerationConfig, SpiritLM
from spiritlm_jax.speech.vocoder import write_wav

PROG = "python -m spiritlm_jax.generate"
# Flags whose values are free text (kept verbatim, not read as YAML): --text/--speech become `inputs`.
_VERBATIM = {"--text": "text", "--speech": "speech", "--inputs": None, "--prompt": "prompt"}


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    checkpoint: str  # training run, converted model directory, or converted reference tree root
    inputs: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"help": "ordered prompt inputs 'text:...' / 'speech:PATH' (--text X / --speech X add one each)"},
    )
    prompt: Optional[str] = None  # a ready token string instead of inputs
    variant: Optional[str] = None  # base or expressive: the LM to use from a converted tree holding both
    output_modality: str = "arbitrary"  # text, speech or arbitrary
    # generation options: transformers GenerationConfig fields with its defaults, as the reference
    max_new_tokens: Optional[int] = None  # new tokens; unset: max_length counts prompt + new
    max_length: int = 20  # prompt + new tokens when max_new_tokens is unset (transformers' default)
    do_sample: bool = False  # sample (temperature, top_k, top_p) instead of greedy decoding
    temperature: float = 1.0
    top_p: float = 1.0  # 1.0 = off
    top_k: int = 50  # 0 = off; used when sampling (transformers' default 50)
    repetition_penalty: float = 1.0  # 1.0 = off
    greedy: bool = False  # greedy decoding even with do_sample
    speech_stops_at_eos: bool = True  # speech output ends at EOS, as the reference (False: runs to the limit)
    seed: int = 0
    speaker: int = DEFAULT_SPEAKER  # vocoder speaker
    force: bool = True  # restrict tokens to the output modality (--no-force: do not)
    vocoder: Optional[str] = None  # converted HiFi-GAN directory (default: <checkpoint>/vocoder if present)
    out: str = "out.wav"  # speech outputs: out.wav, out_1.wav, ...

    def __post_init__(self):
        if self.output_modality.lower() not in ("text", "speech", "arbitrary"):
            raise ValueError(
                f"output_modality: invalid choice: {self.output_modality!r} (choose from text, speech, arbitrary)"
            )
        for item in self.inputs:
            kind, sep, _ = str(item).partition(":")
            if not sep or kind.lower() not in ("text", "speech"):
                raise ValueError(f"inputs: {item!r} is not 'text:...' or 'speech:PATH'")


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str], Optional[str]]:
    """(the other args, the ordered inputs, the prompt): free-text flags taken out verbatim, in order."""
    rest, inputs, prompt = [], [], None
    argv = list(argv)
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in _VERBATIM:
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"option {flag} needs a value")
                value, i = argv[i + 1], i + 1
            kind = _VERBATIM[flag]
            if kind == "prompt":
                prompt = value
            else:
                inputs.append(value if kind is None else f"{kind}:{value}")
        else:
            rest.append(argv[i])
        i += 1
    return rest, inputs, prompt


def parse(argv: Sequence[str]) -> GenerateConfig:
    """The config of a command line; HelpRequested / ConfigError as `config.parse_cli`."""
    rest, inputs, prompt = split_argv(argv)
    cfg = parse_cli(GenerateConfig, rest, PROG, __doc__)
    try:
        cfg = dataclasses.replace(
            cfg, inputs=[*cfg.inputs, *inputs], prompt=prompt if prompt is not None else cfg.prompt
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not cfg.inputs and not cfg.prompt:
        raise ConfigError("give --text and/or --speech inputs, or --prompt")
    return cfg


def generate(cfg: GenerateConfig) -> int:
    inputs = [tuple(item.split(":", 1)) for item in cfg.inputs] or None
    try:
        gen_cfg = GenerationConfig(
            do_sample=cfg.do_sample and not cfg.greedy,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            repetition_penalty=cfg.repetition_penalty,
            max_new_tokens=cfg.max_new_tokens,
            max_length=cfg.max_length,
        )
        lm = SpiritLM.from_checkpoint(cfg.checkpoint, vocoder=cfg.vocoder, variant=cfg.variant)
        outputs, prompt = lm.generate(
            inputs,
            cfg.prompt,
            cfg.output_modality,
            gen_cfg,
            cfg.force,
            cfg.speaker,
            return_prompt=True,
            seed=cfg.seed,
            speech_stops_at_eos=cfg.speech_stops_at_eos,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prompt: {prompt}")
    n_audio = 0
    for out in outputs:
        if out.content_type.value == "TEXT":
            print(f"[text] {out.content}")
        else:
            stem = Path(cfg.out)
            path = stem if n_audio == 0 else stem.with_name(f"{stem.stem}_{n_audio}{stem.suffix}")
            write_wav(path, out.content)
            n_audio += 1
            print(f"[speech] {len(out.content) / 16000:.2f} s -> {path}")
    if not outputs:
        print("(no output: the continuation was empty or only a short speech chunk, which is dropped)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(GenerateConfig, argv, PROG, generate, __doc__, parse=parse)


if __name__ == "__main__":
    sys.exit(main())
