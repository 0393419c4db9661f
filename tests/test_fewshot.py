"""Few-shot prompt builders (docs/reference.md, evaluation) and the few-shot ASR / TTS / intent evaluation: prompts,
parsing, shot selection, WER/CER, resume, bad items, the CLI. A tiny random LM with the demo
tokenizer and the demo's log-mel unit tokenizer stands in for a trained Spirit LM: the harness, not
the model, is under test (its predictions are checked against the model's own greedy outputs)."""

import json
from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax.evaluation import fewshot as fe
from spiritlm_jax.inference import fewshot
from spiritlm_jax.inference.spiritlm import GenerationConfig, OutputModality
from tests.test_generation import tiny_lm

DATA = Path(__file__).parent / "data"
WAVS = {"loginok": "agent loginok", "pass": "password", "intro": "welcome to the voicemail system"}  # ids -> text
INTENTS = {"loginok": "login", "pass": "password", "intro": "voicemail"}


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(max_seq_len=1024)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FILES = {"loginok": "agent-loginok.wav", "pass": "agent-pass.wav", "intro": "vm-intro.wav"}


def audio(name: str) -> str:
    return str(DATA / FILES[name])


def test_prompt_formats():
    a, b, q = "[Hu1][Hu2]", "[St3][Pi4][Hu5]", "[Hu9]"
    assert fewshot.asr_prompt([(a, "hello there"), (b, "bye")], q) == (
        "[Speech][Hu1][Hu2][Text]<START Transcript> hello there <END>"
        "[Speech][St3][Pi4][Hu5][Text]<START Transcript> bye <END>"
        "[Speech][Hu9][Text]<START Transcript> "
    )
    assert fewshot.tts_prompt([("hello", a)], "bye", stop_speech="[Hu7][Hu8]") == (
        "[Text]hello stop[Speech][Hu1][Hu2][Hu7][Hu8][Text]bye stop[Speech]"
    )
    assert fewshot.intent_prompt([(a, "alarm_set"), (b, "weather_query")], q) == (
        "[Speech][Hu1][Hu2][Text]A:alarm_set[Speech][St3][Pi4][Hu5][Text]A:weather_query[Speech][Hu9][Text]A:"
    )
    assert fewshot.asr_prompt([], q) == "[Speech][Hu9][Text]<START Transcript> "  # zero-shot
    # audio goes through `encode`
    seen = []
    p = fewshot.asr_prompt([("a.wav", "x")], "b.wav", encode=lambda s: seen.append(s) or "[Hu1]")
    assert seen == ["a.wav", "b.wav"] and p.count("[Hu1]") == 2


def test_prompt_errors():
    with pytest.raises(ValueError, match="no speech tokenizer"):
        fewshot.asr_prompt([], "query.wav")
    with pytest.raises(ValueError, match="shot 0 transcript: text must not contain modality markers"):
        fewshot.asr_prompt([("[Hu1]", "a [Speech] b")], "[Hu2]")
    with pytest.raises(ValueError, match="shot 0 intent: labels are single tokens"):
        fewshot.intent_prompt([("[Hu1]", "set alarm")], "[Hu2]")
    with pytest.raises(ValueError, match="neither a unit string"):
        fewshot.intent_prompt([], "[Hu2][Text]")
    with pytest.raises(ValueError, match="query text: expected a non-empty string"):
        fewshot.tts_prompt([], "  ")


def test_parsers_and_scores():
    assert fewshot.parse_transcript("hello  world <END> junk") == "hello world"
    assert fewshot.parse_transcript("hello <START Transcript> x") == "hello"
    assert fewshot.parse_transcript("no end mark") == "no end mark"
    assert fewshot.parse_intent(" alarm_set\nA:foo") == "alarm_set" and fewshot.parse_intent("") == ""
    assert fewshot.strip_end_word("Hello world, stop.") == "Hello world,"
    assert fe.normalize_text("Hello, World!  It's") == "hello world it's"
    assert fe.error_rates(["hello world", "a b c d"], ["Hello!", "a b c d"]) == {
        "wer": pytest.approx(1 / 6),
        "cer": pytest.approx(6 / 18),
    }


def test_shot_selection():
    pool = [fe.Example(str(i), "a.wav", intent=lab) for i, lab in enumerate("aaaaabbbc")]
    picked = fe.pick_shots(pool, 6, seed=1, balanced=True)
    labels = sorted(ex.intent for ex in picked)
    assert labels == ["a", "a", "a", "b", "b", "c"] and len({ex.id for ex in picked}) == 6  # round robin a, b, c
    assert fe.pick_shots(pool, 6, seed=1, balanced=True) == picked  # seeded
    assert fe.pick_shots(pool, 3, seed=2) == fe.pick_shots(pool, 3, seed=2)
    with pytest.raises(ValueError, match="10 shots asked for but the shot manifest has 9"):
        fe.pick_shots(pool, 10, seed=0)


def test_manifest_errors(tmp_path):
    bad = write_manifest(tmp_path / "m.jsonl", [{"id": "1", "audio": "a.wav", "text": "x", "speaker": 3}])
    with pytest.raises(ValueError, match=r"m.jsonl:1: unknown field\(s\) \['speaker'\]"):
        fe.load_examples(bad, "asr")
    bad = write_manifest(tmp_path / "m.jsonl", [{"id": "1", "audio": "a.wav"}])
    with pytest.raises(ValueError, match=r"m.jsonl:1: missing field\(s\) \['intent'\]"):
        fe.load_examples(bad, "intent")
    tts = fe.load_examples(write_manifest(tmp_path / "t.jsonl", [{"id": "1", "text": "hi"}]), "tts", need_audio=False)
    assert tts == [fe.Example("1", None, "hi")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fe.load_examples(tmp_path / "nope.jsonl", "asr")


def test_asr_run_resume_and_bad_item(lm, tmp_path):
    pool = [fe.Example(k, audio(k), text=v) for k, v in WAVS.items()]
    items = pool[:2] + [fe.Example("missing", str(tmp_path / "missing.wav"), text="lost")]
    cfg = fe.FewShotConfig(task="asr", shots=2, batch_size=2, max_new_tokens=12)
    row = fe.run_fewshot(lm, items, pool, tmp_path / "out", cfg, log=lambda *_: None)
    assert row["n"] == 2 and row["bad"] == 1
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert "missing.wav does not exist" in recs["missing"]["error"]
    # predictions are the model's own greedy continuation of the paper-format prompt, parsed
    shots_ids = json.loads((tmp_path / "out" / "shots.json").read_text())["shots"]
    shots = [(lm.encode_speech(audio(i)), WAVS[i]) for i in shots_ids]
    prompt = fewshot.asr_prompt(shots, lm.encode_speech(items[0].audio))
    gen = lm.generate(
        prompt=prompt,
        output_modality=OutputModality.TEXT,
        generation_config=GenerationConfig(do_sample=False, max_new_tokens=12),
    )[0].content
    assert recs[items[0].id]["prediction"] == fewshot.parse_transcript(gen)
    expected = fe.error_rates([WAVS[i.id] for i in items[:2]], [recs[i.id]["prediction"] for i in items[:2]])
    assert row["wer"] == pytest.approx(expected["wer"]) and row["wer"] > 0
    # resume: nothing is generated again; a different shot setting in the same folder is refused
    real = lm.generate_batch
    lm.generate_batch = lambda *a, **k: pytest.fail("resumed run generated again")
    try:
        assert fe.run_fewshot(lm, items, pool, tmp_path / "out", cfg, log=lambda *_: None) == row
        with pytest.raises(ValueError, match="different run"):
            fe.run_fewshot(
                lm, items, pool, tmp_path / "out", fe.FewShotConfig(task="asr", shots=1), log=lambda *_: None
            )
    finally:
        lm.generate_batch = real


def test_intent_and_tts(lm, tmp_path):
    pool = [fe.Example(k, audio(k), intent=v) for k, v in INTENTS.items()]
    row = fe.run_fewshot(
        lm, pool, pool, tmp_path / "intent", fe.FewShotConfig(task="intent", shots=3), log=lambda *_: None
    )
    recs = [json.loads(x) for x in (tmp_path / "intent" / "results.jsonl").read_text().splitlines()]
    hits = [r["prediction"] == r["reference"] for r in recs]
    assert row == {"n": 3, "bad": 0, "accuracy": pytest.approx(np.mean(hits))}

    heard = []

    def transcriber(a):  # test double: records the audio length, "hears" two words and the end word
        heard.append(a.size)
        return "welcome to stop."

    pool = [fe.Example(k, audio(k), text=v) for k, v in WAVS.items()]
    items = [fe.Example("q", None, text="welcome to the voicemail system")]
    cfg = fe.FewShotConfig(task="tts", shots=2, max_new_tokens=30)
    row = fe.run_fewshot(lm, items, pool, tmp_path / "tts", cfg, transcriber=transcriber, log=lambda *_: None)
    rec = json.loads((tmp_path / "tts" / "results.jsonl").read_text())
    assert heard == [30 * 640] and rec["prediction"] == "welcome to"  # the end word is stripped
    assert row["wer"] == pytest.approx(3 / 5)  # 3 deletions out of 5 words
    assert Path(rec["audio"]).is_file()
    units, _ = lm.vocoder.calls[-1]
    assert units.count("[Hu") == 30

    def broken(a):
        raise RuntimeError("model crashed")

    row = fe.run_fewshot(lm, items, pool, tmp_path / "tts_broken", cfg, transcriber=broken, log=lambda *_: None)
    rec = json.loads((tmp_path / "tts_broken" / "results.jsonl").read_text())
    assert row["bad"] == 1 and row["n"] == 0 and "transcriber failed: RuntimeError: model crashed" in rec["error"]
    with pytest.raises(ValueError, match="give a transcriber"):
        fe.run_fewshot(lm, items, pool, tmp_path / "tts2", cfg, log=lambda *_: None)


def test_context_overflow_is_a_bad_item(lm, tmp_path):
    pool = [fe.Example(k, audio(k), text=v * 40) for k, v in WAVS.items()]
    row = fe.run_fewshot(lm, pool[:1], pool, tmp_path / "o", fe.FewShotConfig(task="asr", shots=3), log=lambda *_: None)
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    assert row["bad"] == 1 and "exceeds the model's context" in rec["error"]


def tiny_whisper(d: Path) -> Path:
    """A random 1-layer Whisper with a byte-level tokenizer, saved like a Hugging Face directory."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    d.mkdir()
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    (d / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = WhisperTokenizer(
        str(d / "vocab.json"),
        str(d / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>", "<|notimestamps|>"]})
    eot, sot = tok.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    cfg = WhisperConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
    )
    torch.manual_seed(0)
    m = WhisperForConditionalGeneration(cfg).eval()
    m.generation_config.forced_decoder_ids = None
    m.save_pretrained(d)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(d)
    return d


def test_whisper_transcriber_runs_a_local_directory(tmp_path):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    d = tiny_whisper(tmp_path / "whisper")
    t = fe.load_transcriber(f"whisper:{d}")
    t.max_new_tokens = 6
    wav = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    proc, m = WhisperProcessor.from_pretrained(d), WhisperForConditionalGeneration.from_pretrained(d).eval()
    with torch.no_grad():
        ids = m.generate(proc(wav, sampling_rate=16000, return_tensors="pt").input_features, max_new_tokens=6)
    assert t(wav) == proc.batch_decode(ids, skip_special_tokens=True)[0].strip() != ""
    with pytest.raises(FileNotFoundError, match="not a Hugging Face Whisper directory"):
        fe.load_transcriber(f"whisper:{tmp_path}")
    with pytest.raises(ValueError, match="use whisper:DIR"):
        fe.load_transcriber("whisper")


def test_cli_and_suite(lm, tmp_path, monkeypatch, capsys):
    import yaml

    from spiritlm_jax.evaluate import main
    from spiritlm_jax.inference.spiritlm import SpiritLM

    monkeypatch.setattr(SpiritLM, "from_checkpoint", classmethod(lambda cls, path, **kw: lm))
    rows = [{"id": k, "audio": FILES[k], "intent": v} for k, v in INTENTS.items()]
    m = tmp_path / "intent.jsonl"
    m.write_text("".join(json.dumps({**r, "audio": str(DATA / r["audio"])}) + "\n" for r in rows))
    out = tmp_path / "cli"
    argv = [
        "fewshot",
        "--task",
        "intent",
        "--checkpoint",
        "ckpt",
        "--items",
        str(m),
        "--shots-from",
        str(m),
        "--shots",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "fewshot_intent" and report["rows"]["intent"]["n"] == 3
    assert "intent_accuracy" in report["summary"] and (out / "report.md").is_file()
    assert main(argv[:-2] + ["--shots", "9", "--out", str(tmp_path / "x")]) == 2
    assert "9 shots asked for" in capsys.readouterr().err
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            [
                {
                    "task": "fewshot",
                    "name": "intent2",
                    "args": {
                        "task": "intent",
                        "checkpoint": "ckpt",
                        "items": str(m),
                        "shots-from": str(m),
                        "shots": 2,
                        "out": str(tmp_path / "s1"),
                    },
                }
            ]
        )
    )
    assert main(["suite", str(suite), "--out", str(tmp_path / "suite")]) == 0
    assert "intent2" in (tmp_path / "suite" / "suite.md").read_text()
