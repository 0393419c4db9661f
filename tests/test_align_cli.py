"""`python -m spiritlm_jax.align` with the pocketsphinx aligner on the real recordings of tests/data
(transcripts from tests/data/README.md): words in transcript order and spelling, bad inputs reported
(exit 3) and never fatal, resume after an interruption, workers give the same output; the
letter-to-sound path for words the dictionary lacks."""

import json
import shutil
from pathlib import Path

import pytest

from spiritlm_jax.align import main
from spiritlm_jax.alignment import load_aligner
from spiritlm_jax.speech.audio import SAMPLE_RATE, load_audio

DATA = Path(__file__).parent / "data"
PROMPTS = {
    "agent-pass": "Please enter your password followed by the pound key.",
    "agent-loginok": "Agent logged in.",
    "vm-intro": "Please leave your message after the tone. When done hang up or press the pound key.",
}


def write_manifest(path: Path, extra=()):
    with open(path, "w") as f:
        for name, text in PROMPTS.items():
            f.write(
                json.dumps({"audio": str(DATA / f"{name}.wav"), "text": text, "id": name, "source": "asterisk"}) + "\n"
            )
        for line in extra:
            f.write(line + "\n")


def check_words(line: dict):
    words = line["words"]
    assert " ".join(w[0] for w in words) == " ".join(line["text"].split())
    duration = len(load_audio(line["audio"])) / SAMPLE_RATE
    starts = [w[1] for w in words]
    assert starts == sorted(starts) and all(0 <= w[1] < w[2] <= duration + 0.02 for w in words), words


def test_align_cli_pocketsphinx_bad_inputs_and_resume(tmp_path, capsys):
    manifest, out = tmp_path / "in.jsonl", tmp_path / "out" / "aligned.jsonl"
    write_manifest(
        manifest,
        [
            "not json",
            json.dumps({"audio": "missing.wav", "text": "hello"}),
            json.dumps({"audio": str(DATA / "agent-pass.wav")}),  # no text: copied (speech-only for prepare)
        ],
    )
    assert main(["--manifest", str(manifest), "--out", str(out), "--no-progress"]) == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x.get("id") for x in lines] == ["agent-pass", "agent-loginok", "vm-intro", None]
    for x in lines[:3]:
        assert x["source"] == "asterisk"
        check_words(x)
    assert "words" not in lines[3]
    bad = [json.loads(x) for x in (tmp_path / "out" / "bad_files.jsonl").read_text().splitlines()]
    assert [b["entry"].rsplit(":", 1)[1] for b in bad] == ["4", "5"]
    assert "does not exist" in bad[1]["reason"]
    # "Agent logged in.": three words inside the 1.7 s prompt, in order, with pauses found
    agent = lines[1]["words"]
    assert agent[0][1] < 0.3 and agent[-1][2] > 1.3

    first = out.read_text()
    capsys.readouterr()
    assert main(["--manifest", str(manifest), "--out", str(out), "--no-progress"]) == 3
    assert "0 aligned now" in capsys.readouterr().out and out.read_text() == first
    # an interrupted run: the last line lost and the one before cut in the middle
    kept = first.splitlines(keepends=True)
    out.write_text("".join(kept[:2]) + kept[2][:25])
    assert main(["--manifest", str(manifest), "--out", str(out), "--no-progress"]) == 3
    assert out.read_text() == first


def test_align_cli_workers_match_in_process(tmp_path):
    manifest = tmp_path / "in.jsonl"
    write_manifest(manifest)
    shutil.copy(DATA / "agent-loginok.wav", tmp_path / "rel.wav")
    with open(manifest, "a") as f:
        f.write(json.dumps({"audio": "rel.wav", "text": PROMPTS["agent-loginok"]}) + "\n")
    a, b = tmp_path / "a" / "out.jsonl", tmp_path / "b.jsonl"
    assert main(["--manifest", str(manifest), "--out", str(a), "--no-progress", "--batch-size", "2"]) == 0
    assert main(["--manifest", str(manifest), "--out", str(b), "--workers", "1", "--no-progress"]) == 0
    la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    assert json.loads(la[-1])["audio"] == "../rel.wav" and json.loads(lb[-1])["audio"] == "rel.wav"
    assert [json.loads(x)["words"] for x in la] == [json.loads(x)["words"] for x in lb]


def test_align_cli_errors_are_exit_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "o.jsonl")]) == 2
    assert main(["--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert main(["--manifest", str(tmp_path / "x"), "--out", str(tmp_path / "o"), "--aligner", "bogus"]) == 2
    assert "error" in capsys.readouterr().err


def test_pocketsphinx_words_outside_the_dictionary():
    al = load_aligner("pocketsphinx")
    wav = load_audio(DATA / "agent-loginok.wav")
    words = al.align(wav, "Agent zorbloged in.")  # a made-up word: letter-to-sound pronunciation
    assert [w[0] for w in words] == ["Agent", "zorbloged", "in."] and "zorbloged" in al.oov_added
    with pytest.raises(ValueError, match="no word"):
        al.align(wav, " ... ")


class Exploding:
    """An aligner whose decoder crashes on one transcript (and whose batch call crashes with it)."""

    def align(self, wav, text):
        if "boom" in text:
            raise RuntimeError("decoder crashed")
        return [[w, 0.1 * i, 0.1 * i + 0.05] for i, w in enumerate(text.split())]

    def align_batch(self, items):
        return [self.align(w, t) for w, t in items]


def test_a_crashing_decoder_is_one_bad_file(tmp_path):
    from spiritlm_jax.alignment.run import AlignConfig, align_manifest

    manifest = tmp_path / "in.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio": str(DATA / f"{n}.wav"), "text": t}) + "\n"
            for n, t in [("agent-pass", "one two"), ("agent-loginok", "boom"), ("vm-intro", "three")]
        )  # fmt: skip
    )
    out = tmp_path / "out.jsonl"
    s = align_manifest(AlignConfig(out=str(out), manifest=(str(manifest),), progress=False), aligner=Exploding())
    assert (s["aligned"], s["bad"]) == (2, 1)
    bad = json.loads((tmp_path / "bad_files.jsonl").read_text())
    assert "RuntimeError: decoder crashed" in bad["reason"] and bad["entry"].endswith(":2")


def test_a_second_job_on_the_same_output_is_refused(tmp_path, capsys):
    from spiritlm_jax.locking import lock_dir

    manifest, out = tmp_path / "in.jsonl", tmp_path / "aligned.jsonl"
    write_manifest(manifest)
    out.write_text('{"keep": "me"}\n')
    with lock_dir(tmp_path, "alignment output", lock_name=".aligned.jsonl.lock"):  # a live first job
        assert main(["--manifest", str(manifest), "--out", str(out), "--no-progress"]) == 2
    assert f"alignment output {out} is in use by pid" in capsys.readouterr().err
    assert out.read_text() == '{"keep": "me"}\n'  # nothing touched
