"""`python -m spiritlm_jax.evaluate TASK ...`: one command per task family, and suites of them.

    python -m spiritlm_jax.evaluate likelihood --checkpoint runs/demo --items items.jsonl \\
        --setting T --setting S --out eval/demo
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --zerospeech lexical/dev --setting S --out eval/swuggy
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --storycloze-csv cloze_test_test__spring2016.csv \\
        --setting T --out eval/sc_text          (add --topic for Topic-StoryCloze)
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --storycloze-dir sSC --setting S --out eval/ssc
    python -m spiritlm_jax.evaluate stsp --checkpoint DIR --manifest stsp_data/manifest/emov/emov.test.jsonl \\
        --text-classifier stsp_data/model/text_classifier --text-tokenizer ROBERTA_TOKENIZER_DIR \\
        --audio-classifier stsp_data/model/speech_classifier --shots 0 --out eval/stsp0
    python -m spiritlm_jax.evaluate fewshot --task asr --checkpoint DIR --items test.jsonl \
        --shots-from train.jsonl --shots 10 --out eval/asr10      (also --task tts / intent)
    python -m spiritlm_jax.evaluate suite suite.yaml --out eval/suite

Every run writes <out>/report.json, report.md and report.png (when matplotlib is installed), prints
progress, and resumes where it stopped (likelihood: scores cached per setting in
<out>/scores_<setting>.json; stsp and fewshot: per-item JSONL). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

from spiritlm_jax.evaluate.report import write_report


class ArgumentError(Exception):
    """A command line the parser rejects (raised instead of exiting, so suites can report it)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgumentError(f"{self.prog}: error: {message}")


def _report(out: Path, name: str, rows: dict) -> None:
    """The likelihood report (kept for callers of the old helper); see report.write_report."""
    write_report(out, "likelihood", name, rows, rows_key="settings",
                 summary={s: r.get("accuracy_normalized") for s, r in rows.items()})


# ----- likelihood ------------------------------------------------------------------------------
def _likelihood_items(args):
    from spiritlm_jax.evaluate.likelihood import load_items, read_zerospeech_gold
    from spiritlm_jax.evaluate.storycloze import load_storycloze

    if args.topic and not (args.storycloze_csv or args.storycloze_dir):
        raise ValueError("--topic builds Topic-StoryCloze from StoryCloze: use it with --storycloze-csv or "
                         "--storycloze-dir")
    if args.zerospeech:
        return read_zerospeech_gold(args.zerospeech), Path(args.zerospeech).name
    if args.storycloze_csv or args.storycloze_dir:
        items = load_storycloze(args.storycloze_csv, args.storycloze_dir, topic=args.topic, seed=args.topic_seed)
        src = Path(args.storycloze_csv or args.storycloze_dir)
        return items, ("Topic-" if args.topic else "") + (src.stem if args.storycloze_csv else src.name)
    return load_items(args.items), Path(args.items).stem


def _check_forms(items, setting: str) -> None:
    """A setting no item can be scored in is a usage error, not N bad items."""
    from spiritlm_jax.evaluate.likelihood import SETTINGS

    ctx_form, cand_form = SETTINGS[setting]
    if setting in ("T2S", "S2T") and all(it.context is None for it in items):
        raise ValueError(f"setting {setting} scores candidates given a context in the other modality, but these "
                         "items have no context (e.g. whole spoken stories); use T or S")
    usable = [it for it in items if all(cand_form in c for c in it.candidates)
              and (it.context is None or ctx_form in it.context)]
    if not usable:
        need = {"text": "text (transcripts)", "audio": "audio"}
        raise ValueError(f"setting {setting} needs {need[ctx_form]} contexts and {need[cand_form]} candidates; "
                         "no item has them")


def likelihood(args) -> int:
    from spiritlm_jax.evaluate.likelihood import Encoder, accuracy, score_items
    from spiritlm_jax.generation import SpiritLM

    items, default_name = _likelihood_items(args)
    for setting in args.setting:
        _check_forms(items, setting)
    print(f"{len(items)} items from {default_name}", flush=True)
    lm = SpiritLM.from_checkpoint(args.checkpoint)
    enc = Encoder(lm.tokenizer, lm.speech_tokenizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for setting in args.setting:
        cache = out / f"scores_{setting}.json"
        done = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [it for it in items if it.id not in done]
        for start in range(0, len(todo), args.chunk):
            part = todo[start:start + args.chunk]
            done.update(score_items(lm.model, lm.params, part, enc, setting, args.batch_size))
            cache.write_text(json.dumps(done))
            print(f"{setting}: {min(start + args.chunk, len(todo))}/{len(todo)} items scored", flush=True)
        rows[setting] = accuracy(done, items)
        r = rows[setting]
        print(f"{setting}: accuracy {r['accuracy']} (normalised {r['accuracy_normalized']}) over {r['n']} items, "
              f"{r['bad']} bad")
    _report(out, args.name or default_name, rows)
    print(f"report: {out / 'report.md'}")
    return 0


# ----- stsp ------------------------------------------------------------------------------------
def stsp(args) -> int:
    from spiritlm_jax.evaluate import stsp as S
    from spiritlm_jax.generation import SpiritLM

    directions = args.direction or list(S.DIRECTIONS)
    fewshot_dir = args.few_shot_dir or (S.default_fewshot_dir(Path(args.manifest)) if args.shots else None)
    S.check_requirements(directions, bool(args.text_classifier), bool(args.audio_classifier), args.shots, fewshot_dir)
    items = S.load_manifest(args.manifest, args.data_root)
    if args.limit:
        items = items[:args.limit]
    print(f"{len(items)} STSP items from {args.manifest}; directions {directions}, {args.shots}-shot", flush=True)
    text_clf = audio_clf = None
    if args.text_classifier:
        text_clf = S.HFTextClassifier(args.text_classifier, args.text_tokenizer,
                                      S.parse_label_map(args.text_label_map), args.classifier_device)
    if args.audio_classifier:
        audio_clf = S.HFAudioClassifier(args.audio_classifier, S.parse_label_map(args.audio_label_map),
                                        args.classifier_device)
    lm = SpiritLM.from_checkpoint(args.checkpoint, **({"vocoder": args.vocoder} if args.vocoder else {}))
    report = S.run_stsp(
        lm, items, args.out, directions, text_clf, audio_clf, shots=args.shots, fewshot_dir=fewshot_dir,
        data_root=args.data_root, seed=args.seed, batch_size=args.batch_size, temperature=args.temperature,
        top_p=args.top_p, text_new_tokens=args.text_new_tokens, speech_new_tokens=args.speech_new_tokens,
        speaker=args.speaker, save_audio=args.save_audio, manifest=args.manifest,
        progress=lambda m: print(m, flush=True))
    print("summary: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a"
                                  for k, v in report["summary"].items()))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


# ----- suite -----------------------------------------------------------------------------------
def suite_runs(spec, source: str = "suite") -> list[dict]:
    """[{task, name, argv, out}] from a suite spec: a list of runs, or {runs: [...], defaults: {...}}
    where defaults are args given to every run (a run's own args win)."""
    defaults = {}
    if isinstance(spec, dict):
        unknown = set(spec) - {"runs", "defaults"}
        if unknown:
            raise ValueError(f"{source}: unknown top-level key(s) {sorted(unknown)}; use 'runs' and 'defaults'")
        defaults = spec.get("defaults") or {}
        spec = spec.get("runs")
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"{source}: expected a non-empty list of runs (or a mapping with 'runs')")
    if not isinstance(defaults, dict):
        raise ValueError(f"{source}: 'defaults' must be a mapping of args")
    runs = []
    for i, run in enumerate(spec, 1):
        where = f"{source}: run {i}"
        if not isinstance(run, dict) or "task" not in run:
            raise ValueError(f"{where}: expected a mapping with 'task' (and 'args', 'name'), got {run!r}")
        unknown = set(run) - {"task", "args", "name"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; use task, args, name")
        if run["task"] == "suite":
            raise ValueError(f"{where}: a suite cannot run another suite")
        args = {**defaults, **(run.get("args") or {})}
        argv = [str(run["task"])]
        for key, value in args.items():
            flag = "--" + str(key).replace("_", "-")
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, dict):
                    raise ValueError(f"{where}: arg {key!r} is a mapping; give a value or a list of values")
                if v is True:
                    argv.append(flag)
                elif v is not False and v is not None:
                    argv += [flag, str(v)]
        runs.append({"task": str(run["task"]), "name": str(run.get("name") or f"{i}-{run['task']}"),
                     "argv": argv, "out": args.get("out")})
    return runs


def run_command(argv) -> tuple[int, str | None]:
    """Parse and run one command; (exit code, error message or None). Never exits the process."""
    try:
        args = build_parser().parse_args(argv)
    except ArgumentError as e:
        return 2, str(e)
    except SystemExit as e:  # --help
        return (e.code if isinstance(e.code, int) else 0), None
    try:
        return args.func(args), None
    except (ValueError, FileNotFoundError) as e:
        return 2, str(e)
    except Exception as e:  # noqa: BLE001 - a suite reports a crashed run and goes on
        traceback.print_exc()
        return 1, f"{type(e).__name__}: {e}"


def suite(args) -> int:
    import yaml

    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    runs = suite_runs(spec, str(path))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, run in enumerate(runs, 1):
        print(f"[suite {i}/{len(runs)}] {run['name']}: python -m spiritlm_jax.evaluate {shlex.join(run['argv'])}",
              flush=True)
        t0 = time.time()
        rc, error = run_command(run["argv"])
        res = {"name": run["name"], "task": run["task"], "argv": run["argv"], "rc": rc,
               "status": "ok" if rc == 0 else "failed", "seconds": round(time.time() - t0, 1), "error": error,
               "summary": {}, "report": None}
        report = Path(run["out"]) / "report.json" if run["out"] else None
        if rc == 0 and report is not None and report.is_file():
            res["report"] = str(report)
            res["summary"] = json.loads(report.read_text()).get("summary", {})
        if error:
            print(f"[suite {i}/{len(runs)}] {run['name']} failed: {error}", file=sys.stderr, flush=True)
        results.append(res)
    failed = sum(r["rc"] != 0 for r in results)
    (out / "suite.json").write_text(json.dumps({"suite": str(path), "runs": results, "failed": failed}, indent=2))
    lines = [f"# Suite {path.name}", "", "| run | task | status | seconds | results |", "|---|---|---|---|---|"]
    for r in results:
        metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r["summary"].items())
        detail = metrics if r["rc"] == 0 else (r["error"] or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['name']} | {r['task']} | {r['status']} | {r['seconds']} | {detail} |")
    (out / "suite.md").write_text("\n".join(lines) + "\n")
    print(f"suite: {len(results) - failed}/{len(results)} runs ok; summary {out / 'suite.md'}")
    return 0 if failed == 0 else 1


# ----- parser ----------------------------------------------------------------------------------
def _add_likelihood(sub) -> None:
    lk = sub.add_parser("likelihood", help="likelihood-pair accuracy (sWUGGY, sBLIMP, (Topic-)StoryCloze, ...)")
    lk.add_argument("--checkpoint", required=True)
    src = lk.add_mutually_exclusive_group(required=True)
    src.add_argument("--items", help="manifest JSONL (see spiritlm_jax/evaluate/likelihood.py)")
    src.add_argument("--zerospeech", help="a ZeroSpeech 2021 lexical/syntactic folder with gold.csv")
    src.add_argument("--storycloze-csv", help="the ROCStories cloze test CSV (text StoryCloze)")
    src.add_argument("--storycloze-dir", help="a spoken StoryCloze release folder (sSC or tSC: <n>_correct.wav, ...)")
    lk.add_argument("--topic", action="store_true",
                    help="Topic-StoryCloze: wrong endings replaced by other stories' right endings")
    lk.add_argument("--topic-seed", type=int, default=0)
    lk.add_argument("--setting", action="append", choices=["T", "S", "T2S", "S2T"], required=True)
    lk.add_argument("--out", required=True)
    lk.add_argument("--name", default=None)
    lk.add_argument("--batch-size", type=int, default=16)
    lk.add_argument("--chunk", type=int, default=256, help="items scored between cache writes")
    lk.set_defaults(func=likelihood)


def _add_stsp(sub) -> None:
    st = sub.add_parser("stsp", help="speech-text sentiment preservation (T2T, T2S, S2S, S2T)")
    st.add_argument("--checkpoint", required=True)
    st.add_argument("--vocoder", default=None, help="a converted vocoder folder (default: the checkpoint's)")
    st.add_argument("--manifest", required=True,
                    help="STSP manifest JSONL (id, wav_path, emotion, sentiment, asr, split, speaker)")
    st.add_argument("--data-root", default=None, help="folder wav_path is relative to (default: the release's data/)")
    st.add_argument("--direction", action="append", choices=["T2T", "T2S", "S2S", "S2T"],
                    help="repeat for several (default: all four)")
    st.add_argument("--shots", type=int, default=0, help="0, 3, 6 or 9: balanced few-shot prompts")
    st.add_argument("--few-shot-dir", default=None,
                    help="folder with t2t/t2s/s2t/s2s.jsonl (default: the release's manifest/few_shot)")
    st.add_argument("--text-classifier", default=None, help="local HF sequence-classification model folder")
    st.add_argument("--text-tokenizer", default=None, help="its tokenizer folder (default: the model folder)")
    st.add_argument("--text-label-map", action="append", help="NAME=positive|negative|neutral|ignore (repeat)")
    st.add_argument("--audio-classifier", default=None, help="local HF audio-classification model folder")
    st.add_argument("--audio-label-map", action="append", help="NAME=positive|negative|neutral|ignore (repeat)")
    st.add_argument("--classifier-device", default=None, help="torch device (default: cuda when available)")
    st.add_argument("--out", required=True)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--batch-size", type=int, default=8)
    st.add_argument("--temperature", type=float, default=0.8)
    st.add_argument("--top-p", type=float, default=0.95)
    st.add_argument("--text-new-tokens", type=int, default=50)
    st.add_argument("--speech-new-tokens", type=int, default=300)
    st.add_argument("--speaker", type=int, default=2)
    st.add_argument("--save-audio", action="store_true", help="keep speech outputs as <out>/audio/<direction>/<id>.wav")
    st.add_argument("--limit", type=int, default=0, help="only the first N items (smoke runs)")
    st.set_defaults(func=stsp)


def _add_fewshot(sub) -> None:
    from spiritlm_jax.evaluate import fewshot

    fs = sub.add_parser("fewshot", help="few-shot ASR / TTS / intent classification (paper App. B formats)")
    fewshot.add_arguments(fs)
    fs.set_defaults(func=fewshot.run_cli)


def _add_suite(sub) -> None:
    su = sub.add_parser("suite", help="run the commands listed in a YAML file; a failing run is reported, not fatal")
    su.add_argument("config", help="YAML: a list of {task, args, name} (or {runs: [...], defaults: {...}})")
    su.add_argument("--out", required=True, help="folder for suite.json and suite.md")
    su.set_defaults(func=suite)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m spiritlm_jax.evaluate", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="task", required=True)
    _add_likelihood(sub)
    _add_stsp(sub)
    _add_fewshot(sub)
    _add_suite(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except ArgumentError as e:
        ap.print_usage(sys.stderr)
        print(e, file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
