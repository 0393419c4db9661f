"""Corpus preparation (spiritlm_jax/data/prepare/, CLI spiritlm_jax/prepare.py): real recordings, bad inputs,
summary numbers, resume after an interruption, worker processes, the command line."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spiritlm_jax.data.pipeline import DEMO_CORPUS, DataConfig, build_train_iterator, check_vocab
from spiritlm_jax.data.prepare import PrepareConfig, check_words, prepare
from spiritlm_jax.data.sources import read_examples
from spiritlm_jax.prepare import main
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.features import num_frames
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.tokens import merge_units

DATA = Path(__file__).parent / "data"
AMFM = Path(importlib.util.find_spec("amfm_decompy").origin).parent / "sample.wav"
SP = DEMO_CORPUS / "tokenizer.model"
QUANT = DEMO_CORPUS / "quantizer"

GOOD_SPEECH = [DATA / "agent-pass.wav", AMFM]
GOOD_ALIGNED = {
    DATA / "agent-loginok.wav": [["Agent", 0.05, 0.5], ["logged", 0.5, 0.9], ["in", 0.9, 1.2]],
    DATA / "vm-intro.wav": [["Please", 0.1, 0.4], ["leave", 0.45, 0.7], ["your", 0.7, 0.9], ["message", 0.9, 1.4]],
}


def _manifest(tmp_path: Path) -> Path:
    m = tmp_path / "manifest.jsonl"
    if m.is_file():
        return m
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(800, np.float32), 16000)  # under one 1280-sample chunk
    lines = [
        {"audio": str(GOOD_SPEECH[0]), "text": "Please enter your password followed by the pound key.", "id": "pass"},
        {"audio": str(DATA / "agent-loginok.wav"), "words": GOOD_ALIGNED[DATA / "agent-loginok.wav"]},
        {"audio": "missing.wav"},  # relative: resolved against the manifest's folder
        {"audio": str(AMFM), "source": "amfm"},
        "{not json",
        {"audio": "corrupt.wav"},
        {"audio": "empty.wav"},
        {"audio": str(DATA / "vm-intro.wav"), "words": GOOD_ALIGNED[DATA / "vm-intro.wav"]},
        {"audio": str(DATA / "vm-intro.wav"), "words": [["Please", 0.1, 0.4], ["leave", 0.5, 99.0]]},
        {"audio": "short.wav"},
        {"text": "no audio here"},
    ]
    m.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return m


def _text(tmp_path: Path) -> Path:
    t = tmp_path / "text.txt"
    t.write_text("the first line of text\n\n  a second line  \nthird\n")
    return t


def _cfg(tmp_path, out="out", **kw):
    base = dict(
        out=str(tmp_path / out),
        manifest=(str(_manifest(tmp_path)),),
        text=(str(_text(tmp_path)),),
        tokenizer=f"mel:{QUANT}",
        sp_model=str(SP),
        shard_size=3,
        text_shard_size=2,
        progress=False,
    )
    return PrepareConfig(**{**base, **kw})


def _all(out: Path, kind: str) -> list[dict]:
    return [ex for p in sorted((out / kind).glob("*.array_record")) for ex in read_examples(p)]


def test_prepare_real_recordings_bad_files_and_summary(tmp_path):
    cfg = _cfg(tmp_path)
    summary = prepare(cfg)
    out = Path(cfg.out)
    bad = [json.loads(line) for line in (out / "bad_files.jsonl").read_text().splitlines()]
    reasons = {Path(b["path"]).name: b["reason"] for b in bad}
    assert set(reasons) == {
        "manifest.jsonl:5",
        "manifest.jsonl:11",
        "missing.wav",
        "corrupt.wav",
        "empty.wav",
        "vm-intro.wav",
        "short.wav",
    }
    assert "not valid JSON" in reasons["manifest.jsonl:5"] and "'audio'" in reasons["manifest.jsonl:11"]
    assert "does not exist" in reasons["missing.wav"] and "cannot read audio" in reasons["corrupt.wav"]
    assert "empty" in reasons["empty.wav"] and "shorter than one 1280-sample chunk" in reasons["short.wav"]
    assert "ends at 99.0 s, past the end of the audio" in reasons["vm-intro.wav"]
    assert json.loads((out / "corpus.json").read_text()) == {k: v for k, v in summary.items() if k != "_run"}

    # the examples: contract format, units from the same tokenizer, words kept
    tok = MelUnitTokenizer(QUANT)
    speech, aligned, text = _all(out, "speech"), _all(out, "aligned"), _all(out, "text")
    assert [e["id"] for e in speech] == ["pass", str(AMFM)] and speech[1]["source"] == "amfm"
    assert [Path(e["id"]).name for e in aligned] == ["agent-loginok.wav", "vm-intro.wav"]
    for ex, path in zip(speech + aligned, GOOD_SPEECH + list(GOOD_ALIGNED)):
        units = tok.encode_units(path)["hubert"]
        assert ex["hubert"] == units.tolist() and len(units) == num_frames(len(load_audio(path)))
    for ex, (path, words) in zip(aligned, GOOD_ALIGNED.items()):
        assert ex["kind"] == "aligned" and ex["words"] == words and ex["text"] == " ".join(w[0] for w in words)
    assert [e["text"] for e in text] == ["the first line of text", "a second line", "third"]

    # summary numbers, recomputed independently
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SP))
    dur = {p: sf.info(str(p)).duration for p in GOOD_SPEECH + list(GOOD_ALIGNED)}
    assert summary["counts"] == {"text": 3, "speech": 2, "aligned": 2}
    assert summary["hours"]["speech"] == pytest.approx(sum(dur[p] for p in GOOD_SPEECH) / 3600, rel=1e-6)
    assert summary["hours"]["aligned"] == pytest.approx(sum(dur[p] for p in GOOD_ALIGNED) / 3600, rel=1e-6)
    assert summary["tokens"]["speech"] == sum(len(merge_units(tok.encode_units(p)["hubert"])) for p in GOOD_SPEECH)
    assert summary["tokens"]["aligned"]["speech"] == sum(len(merge_units(e["hubert"])) for e in aligned)
    assert summary["tokens"]["text"] == sum(len(sp.encode(e["text"])) for e in text)
    assert summary["tokens"]["aligned"]["text"] == sum(len(sp.encode(e["text"])) for e in aligned)
    assert summary["words"] == {"text": 9, "aligned": 7}
    assert summary["bad_files"] == 7 and summary["layout"] == {"expressive": False, "text_vocab_size": 512}
    assert (out / "tokenizer.model").read_bytes() == SP.read_bytes()

    # the training pipeline reads the prepared corpus
    dcfg = DataConfig(corpus=str(out), seq_len=64, batch_size=2, read_threads=0)
    check_vocab(dcfg, 1024)
    assert next(build_train_iterator(dcfg))["tokens"].shape == (2, 64)


def test_cli_exit_status(tmp_path):
    t = _text(tmp_path)
    assert main(["--text", str(t), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert (
        main(
            [
                "--manifest",
                str(_manifest(tmp_path)),
                "--out",
                str(tmp_path / "b"),
                "--tokenizer",
                f"mel:{QUANT}",
                "--no-progress",
                "--format",
                "jsonl.gz",
            ]
        )
        == 3
    )
    assert sorted(p.name for p in (tmp_path / "b").rglob("*.jsonl.gz")) == ["audio-00000.jsonl.gz"] * 2
    assert main(["--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c")]) == 2
    assert main(["--out", str(tmp_path / "d")]) == 2  # nothing to prepare
    assert main(["--text", str(t), "--out", str(tmp_path / "e"), "--tokenizer", "hubert"]) == 0  # no audio: unused
    assert main(["--manifest", str(_manifest(tmp_path)), "--out", str(tmp_path / "f"), "--tokenizer", "wav2vec:x"]) == 2


def test_cli_help_lists_every_key_and_unknown_keys_are_errors(tmp_path):
    """`python -m spiritlm_jax.prepare` is built on the one config loader: --help lists every PrepareConfig
    key, an unknown key is an error naming it (exit 2, nothing written)."""
    import dataclasses
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]  # `-m` imports this checkout's package
    run = subprocess.run(
        [sys.executable, "-m", "spiritlm_jax.prepare", "--help"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    listed = {
        line.split()[0]
        for line in run.stdout.split("keys (type, default):")[1].splitlines()
        if line.startswith("  ") and not line.startswith("    ") and line.strip()
    }
    assert listed == {f.name for f in dataclasses.fields(PrepareConfig)}
    assert "exit status" in run.stdout.lower() and "mel:demo" in run.stdout
    t = _text(tmp_path)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "spiritlm_jax.prepare",
            "--text",
            str(t),
            "--out",
            str(tmp_path / "u"),
            "--shard-sise",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 2 and "shard-sise" in bad.stderr and not (tmp_path / "u").exists()
    assert main(["--text", str(t), f"out={tmp_path / 'u'}", "no_such_key=1"]) == 2
    assert main(["--text", str(t), f"out={tmp_path / 'u'}", "workers=many"]) == 2
    assert not (tmp_path / "u").exists()
    # the key=value spelling of the same settings as the flags
    assert main([f"text=[{t}]", f"out={tmp_path / 'kv'}", "progress=false", "format=jsonl", "text_shard_size=2"]) == 0
    assert sorted(p.name for p in (tmp_path / "kv" / "text").iterdir()) == ["text-00000.jsonl", "text-00001.jsonl"]


class CountingTokenizer:
    """Counts the recordings it tokenizes (to show resumed runs skip finished shards)."""

    def __init__(self):
        self.inner = MelUnitTokenizer(QUANT)
        self.seen = 0

    def encode_units_batch(self, wavs):
        self.seen += len(wavs)
        return self.inner.encode_units_batch(wavs)

    def describe(self):
        return self.inner.describe()


class Interrupt(Exception):
    pass


def test_resume_after_interruption_skips_finished_shards(tmp_path):
    # 9 manifest entries (2 lines are bad JSON / no audio), 2 per unit: good recordings per unit 2, 1, 0, 1, 0
    cfg = _cfg(tmp_path, shard_size=2)
    units_done = []

    def stop_after_first(rec):
        units_done.append(rec["unit"])
        raise Interrupt

    with pytest.raises(Interrupt):
        prepare(cfg, tokenizer=CountingTokenizer(), on_unit_done=stop_after_first)
    out = Path(cfg.out)
    assert units_done == ["audio-00000"]
    first = out / "speech" / "audio-00000.array_record"
    stamp = first.stat().st_mtime_ns
    # leftovers of an interruption inside the next unit: a half-written shard and a temp file
    (out / "aligned" / "audio-00003.array_record").write_bytes(b"half a shard")
    (out / "speech" / ".audio-00001.array_record.partial").write_bytes(b"junk")

    tok = CountingTokenizer()
    summary = prepare(cfg, tokenizer=tok)
    assert first.stat().st_mtime_ns == stamp  # not redone
    assert tok.seen == 2  # the good recordings of units 1..4 only
    assert not list(out.rglob("*.partial"))
    done = [json.loads(line)["unit"] for line in (out / ".prepare" / "done.jsonl").read_text().splitlines()]
    assert sorted(done) == sorted(set(done)) and len(done) == 7  # 5 audio units + 2 text units, each once
    assert read_examples(out / "aligned" / "audio-00003.array_record")[0]["kind"] == "aligned"

    # identical to an uninterrupted run
    ref = prepare(_cfg(tmp_path, out="ref", shard_size=2))
    for kind in ("text", "speech", "aligned"):
        assert _all(out, kind) == _all(tmp_path / "ref", kind)
    assert {k: v for k, v in summary.items() if k != "_run"} == {k: v for k, v in ref.items() if k != "_run"}
    assert (out / "bad_files.jsonl").read_text() == (tmp_path / "ref" / "bad_files.jsonl").read_text()

    # a finished preparation reruns as a no-op; other settings are refused unless overwrite
    tok2 = CountingTokenizer()
    prepare(cfg, tokenizer=tok2)
    assert tok2.seen == 0
    with pytest.raises(ValueError, match="other inputs or settings"):
        prepare(_cfg(tmp_path, shard_size=3))
    assert prepare(_cfg(tmp_path, shard_size=3, overwrite=True))["counts"] == summary["counts"]
    assert sorted(p.name for p in (out / "speech").iterdir()) == [
        "audio-00000.array_record",
        "audio-00001.array_record",
    ]


def test_worker_processes_give_the_same_corpus(tmp_path):
    one = prepare(_cfg(tmp_path, out="w0", shard_size=2))
    two = prepare(_cfg(tmp_path, out="w2", shard_size=2, workers=2, batch_size=1))
    assert {k: v for k, v in one.items() if k not in ("_run", "units")} == {
        k: v for k, v in two.items() if k not in ("_run", "units")
    }
    for kind in ("text", "speech", "aligned"):
        assert _all(tmp_path / "w0", kind) == _all(tmp_path / "w2", kind)
    # a tokenizer that fails to load in the workers is an error in the parent, not a hang
    with pytest.raises(FileNotFoundError, match="k-means quantizer directory .*none does not exist"):
        prepare(_cfg(tmp_path, out="w_bad", workers=1, tokenizer=f"mel:{tmp_path / 'none'}"))


@pytest.mark.parametrize(
    "words, reason",
    [
        ([], "non-empty list"),
        ([["a", 0.1]], "is not \\[word, start_s, end_s\\]"),
        ([["a", "0", 1]], "is not \\[word"),
        ([["a", 0.5, 0.2]], "bad times"),
        ([["a", -0.1, 0.2]], "bad times"),
        ([["a", 0.5, 0.6], ["b", 0.2, 0.3]], "before the previous word"),
        ([["a", 0.5, 2.2]], "past the end of the audio"),
    ],
)
def test_check_words_rejects(words, reason):
    import re

    assert re.search(reason, check_words(words, duration=2.0, tolerance=0.1))


def test_check_words_accepts_overlaps_and_tolerance():
    assert check_words([["a", 0.0, 0.6], ["b", 0.5, 2.05], ["c", 0.5, 0.5]], 2.0, 0.1) is None


def test_runner_beam_without_apache_beam_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    """--runner beam needs the [beam] extra: without it, exit 2 and one line saying so (nothing written);
    the local runner never imports Beam."""
    import sys

    import spiritlm_jax

    monkeypatch.setitem(sys.modules, "spiritlm_jax.beam_runner", None)  # as if apache_beam were missing
    monkeypatch.delattr(spiritlm_jax, "beam_runner", raising=False)
    out = tmp_path / "out"
    args = ["--text", str(_text(tmp_path)), "--out", str(out), "--runner", "beam", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "runner=beam needs Apache Beam" in err and "spiritlm_jax[beam]" in err
    assert not out.exists()
    assert main(args[:-3] + ["--no-progress"]) == 0  # the local runner: no Beam needed
