"""`python -m spiritlm_jax.generate`: continue interleaved text/speech prompts from a checkpoint.

    python -m spiritlm_jax.generate --checkpoint runs/demo --text "Please enter your" --output-modality text
    python -m spiritlm_jax.generate --checkpoint runs/demo --speech in.wav --output-modality arbitrary
    python -m spiritlm_jax.generate --checkpoint DIR --prompt "[Text]hello[Speech][Hu3]" --greedy

--text/--speech may repeat; they form the prompt in the order given. Text outputs are printed; speech
outputs are written to --out (out.wav, out_1.wav, ...); they need a vocoder (--vocoder, or
<checkpoint>/vocoder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Ordered(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, "inputs", None) or []
        items.append(("TEXT" if self.dest == "text" else "SPEECH", values))
        namespace.inputs = items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spiritlm_jax.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True,
                    help="training run, converted model directory, or converted reference tree root")
    ap.add_argument("--variant", help="base or expressive: the LM to use from a converted tree holding both")
    ap.add_argument("--text", action=_Ordered, help="a text input (repeatable)")
    ap.add_argument("--speech", action=_Ordered, help="an audio file input (repeatable)")
    ap.add_argument("--prompt", help="a ready token string instead of --text/--speech")
    ap.add_argument("--output-modality", default="arbitrary", choices=["text", "speech", "arbitrary"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speaker", type=int, default=2)
    ap.add_argument("--no-force", action="store_true", help="do not restrict tokens to the output modality")
    ap.add_argument("--vocoder", help="converted HiFi-GAN directory (default: <checkpoint>/vocoder if present)")
    ap.add_argument("--out", default="out.wav")
    args = ap.parse_args(argv)
    inputs = getattr(args, "inputs", None)
    if not inputs and not args.prompt:
        ap.error("give --text and/or --speech inputs, or --prompt")

    from spiritlm_jax.generation import GenerationConfig, SpiritLM

    try:
        cfg = GenerationConfig(do_sample=not args.greedy, temperature=args.temperature, top_p=args.top_p,
                               top_k=args.top_k, repetition_penalty=args.repetition_penalty,
                               max_new_tokens=args.max_new_tokens)
        lm = SpiritLM.from_checkpoint(args.checkpoint, vocoder=args.vocoder, variant=args.variant)
        outputs, prompt = lm.generate(inputs, args.output_modality, cfg, not args.no_force, args.speaker,
                                      return_prompt=True, seed=args.seed, prompt=args.prompt)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prompt: {prompt}")
    n_audio = 0
    for out in outputs:
        if out.content_type.value == "TEXT":
            print(f"[text] {out.content}")
        else:
            import soundfile as sf

            stem = Path(args.out)
            path = stem if n_audio == 0 else stem.with_name(f"{stem.stem}_{n_audio}{stem.suffix}")
            sf.write(path, out.content, 16000)
            n_audio += 1
            print(f"[speech] {len(out.content) / 16000:.2f} s -> {path}")
    if not outputs:
        print("(no output: the continuation was empty or only a short speech chunk, which is dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
