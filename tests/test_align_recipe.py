"""The README's "your own data" recipe end to end, each step its command: a folder of recordings +
transcripts (tests/data's real prompts as x.wav + x.txt; espeak-ng sentences in LibriSpeech's
*.trans.txt layout when espeak-ng is installed, with known word times) -> `align` (pocketsphinx) ->
`kmeans` units -> `prepare` -> `train` (2 steps of a tiny model). Also `prepare --audio-dir --align`
in one step gives the same words."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spiritlm_jax.align import main as align_main
from spiritlm_jax.data.sources import read_examples
from spiritlm_jax.kmeans import main as kmeans_main
from spiritlm_jax.prepare import main as prepare_main
from tests.test_align_cli import PROMPTS
from tests.test_train import SMALL, _env

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SP_MODEL = ROOT / "spiritlm_jax" / "data" / "demo" / "tokenizer.model"
SENTENCES = ("The train left the station at noon", "We measure what we build")


def make_folder(root: Path) -> dict:
    """The recordings folder; returns the known word times of the synthetic sentences."""
    for name, text in PROMPTS.items():
        shutil.copy(DATA / f"{name}.wav", root / f"{name}.wav")
        (root / f"{name}.txt").write_text(text + "\n")
    truth = {}
    if shutil.which("espeak-ng"):
        from tools.build_demo_corpus import synth_aligned

        chapter = root / "LibriSpeech" / "dev-clean" / "1" / "2"
        chapter.mkdir(parents=True)
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            lines = []
            for i, text in enumerate(SENTENCES):
                wav, words = synth_aligned(text, "en-us", 165, rng, Path(tmp))
                sf.write(chapter / f"1-2-{i:04d}.flac", wav, 16000)
                lines.append(f"1-2-{i:04d} {text.upper()}")
                truth[f"1-2-{i:04d}"] = words
        (chapter / "1-2.trans.txt").write_text("\n".join(lines) + "\n")
    return truth


@pytest.mark.slow
def test_your_own_data_recipe(tmp_path, capsys):
    folder = tmp_path / "recordings"
    folder.mkdir()
    truth = make_folder(folder)
    aligned = tmp_path / "aligned.jsonl"
    assert align_main(["--audio-dir", str(folder), "--out", str(aligned), "--no-progress"]) == 0
    lines = [json.loads(x) for x in aligned.read_text().splitlines()]
    assert len(lines) == 3 + len(truth) and all(len(x["words"]) == len(x["text"].split()) for x in lines)
    errors = [
        abs(got[1] - ref[1])
        for x in lines
        if Path(x["id"]).name in truth
        for got, ref in zip(x["words"], truth[Path(x["id"]).name])
    ]
    assert not truth or np.mean(errors) < 0.08, errors  # known times: mean |start error| under 80 ms

    audio_list = tmp_path / "audio.txt"
    audio_list.write_text("\n".join(str(p) for p in sorted(folder.rglob("*")) if p.suffix in (".wav", ".flac")))
    quantizer = tmp_path / "quantizer"
    assert kmeans_main(["--audio-list", str(audio_list), "--k", "16", "--steps", "20", "--out", str(quantizer)]) == 0

    corpus = tmp_path / "corpus"
    prep = ["--manifest", str(aligned), "--text", str(DATA / "english.txt"), "--tokenizer", f"mel:{quantizer}"]
    prep += ["--sp-model", str(SP_MODEL), "--out", str(corpus), "--no-progress"]
    assert prepare_main(prep) == 0
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["counts"]["aligned"] == len(lines) and summary["counts"]["text"] > 0
    ex = read_examples(corpus / summary["shards"]["aligned"][0])
    assert [e["words"] for e in ex] == [x["words"] for x in lines]

    # one step: prepare aligns the folder itself
    one = tmp_path / "corpus_one_step"
    assert prepare_main(["--audio-dir", str(folder), "--align", "pocketsphinx", "--tokenizer", f"mel:{quantizer}",
                         "--out", str(one), "--no-progress"]) == 0  # fmt: skip
    s1 = json.loads((one / "corpus.json").read_text())
    assert [e["words"] for e in read_examples(one / s1["shards"]["aligned"][0])] == [x["words"] for x in lines]

    run = tmp_path / "run"
    args = SMALL + ["steps=2", "eval_every=0", "checkpoint.async_save=false", f"data.corpus={corpus}", f"out_dir={run}"]
    p = subprocess.run([sys.executable, "-m", "spiritlm_jax.train", *args], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert any("loss" in json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
