"""A prepared corpus as vocoder training data (`data.corpus`): `prepare` keeps each recording's audio
path (and speaker / style names) in its examples; the trainer reads the stored units (no tokenizer run),
which equal the tokenizer's on the same audio; the errors (a corpus prepared before the audio paths were
kept, missing recordings, units that are not the audio's) and a 2-step `train_vocoder` run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax.config import ConfigError
from spiritlm_jax.data.prepare import PrepareConfig, encode_batch, load_speech_tokenizer, prepare
from spiritlm_jax.data.sources import read_examples, write_jsonl
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hifigan import upsample_stream
from spiritlm_jax.vocoder_training import data as vdata
from tests.test_vocoder_training import TINY_D, TINY_G  # the tiny sizes of the vocoder trainer's tests

DATA = Path(__file__).parent / "data"
WAVS = {"pass": DATA / "agent-pass.wav", "intro": DATA / "vm-intro.wav", "loginok": DATA / "agent-loginok.wav"}
WORDS = [["Agent", 0.05, 0.5], ["logged", 0.5, 0.9], ["in", 0.9, 1.2]]


def _prepare(root: Path) -> Path:
    """A corpus of two speech examples (speaker / style names) and one aligned example, relative paths."""
    (root / "clips").mkdir(parents=True)
    for name, src in WAVS.items():
        shutil.copy(src, root / "clips" / f"{name}.wav")
    lines = [
        {"audio": "clips/pass.wav", "id": "pass", "speaker": "b", "style": "calm"},
        {"audio": "clips/intro.wav", "id": "intro", "speaker": "a"},
        {"audio": "clips/loginok.wav", "id": "loginok", "words": WORDS, "speaker": 7},
    ]
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = PrepareConfig(
        out=str(root / "corpus"), manifest=(str(root / "m.jsonl"),), tokenizer="mel:demo", progress=False
    )
    assert prepare(cfg)["counts"] == {"text": 0, "speech": 2, "aligned": 1}
    return root / "corpus"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _prepare(tmp_path_factory.mktemp("vc"))


def _examples(corpus: Path) -> dict[str, dict]:
    return {e["id"]: e for kind in ("speech", "aligned") for p in (corpus / kind).iterdir() for e in read_examples(p)}


def test_prepared_examples_keep_the_audio_path_and_names(corpus):
    ex = _examples(corpus)
    clips = (corpus.parent / "clips").absolute()
    assert {k: e["audio"] for k, e in ex.items()} == {k: str(clips / f"{k}.wav") for k in WAVS}
    assert ex["pass"]["speaker"] == "b" and ex["pass"]["style_name"] == "calm"
    assert "style" not in ex["pass"]  # "style" is the (expressive) style unit stream, not the name
    assert ex["intro"]["speaker"] == "a" and "style_name" not in ex["intro"]
    assert ex["loginok"]["kind"] == "aligned" and ex["loginok"]["speaker"] == "7"  # names are strings


def test_corpus_units_are_the_tokenizers_and_the_audio_is_load_audios(corpus):
    entries = vdata.read_corpus([str(corpus)])
    multi = dataclasses.replace(TINY_G, multispkr=True, multistyle=True)
    speakers, styles = vdata.speaker_and_style_lists(entries, multi)
    assert speakers == ["7", "a", "b"] and styles == ["calm"]
    utts = vdata.load_utterances(entries, None, multi, speakers, styles)  # no tokenizer: the corpus' own units
    assert sorted(u.name for u in utts) == sorted(WAVS)
    tok = load_speech_tokenizer("mel:demo")
    for u in utts:
        wav = load_audio(corpus.parent / "clips" / f"{u.name}.wav")
        units = encode_batch(tok, [wav])[0]["hubert"]
        t = min(len(units), len(wav) // TINY_G.hop)
        assert u.frames == t > 0
        np.testing.assert_array_equal(u.units["hubert"], units[:t])
        np.testing.assert_array_equal(u.audio, wav[: t * TINY_G.hop])
    by = {u.name: u for u in utts}
    assert (by["pass"].speaker, by["intro"].speaker, by["loginok"].speaker) == (2, 1, 0) and by["pass"].style == 0


def _hand_corpus(root: Path, examples: list[dict], split: str = "") -> Path:
    write_jsonl(root / split / "speech" / "audio-00000.jsonl", examples)
    return root


def test_a_corpus_without_audio_paths_stops_with_instructions(tmp_path):
    old = _hand_corpus(tmp_path / "old", [{"kind": "speech", "id": "x", "hubert": [1, 2, 3]}])
    with pytest.raises(ConfigError, match=r"corpus .*old, example 'x' has no 'audio' path.*Prepare it again"):
        vdata.read_corpus([str(old)])
    with pytest.raises(ConfigError, match="data.corpus: .*nowhere does not exist"):
        vdata.read_corpus([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no speech or aligned shards"):
        vdata.read_corpus([str(tmp_path / "empty")])


def test_missing_recordings_are_skipped_with_a_warning_and_none_left_is_an_error(tmp_path, capsys):
    corpus = _prepare(tmp_path)
    (tmp_path / "clips" / "intro.wav").unlink()
    utts = vdata.load_utterances(vdata.read_corpus([str(corpus)]), None, TINY_G)
    assert sorted(u.name for u in utts) == ["loginok", "pass"]
    err = capsys.readouterr().err
    assert "example 'intro'" in err and "does not exist" in err and "1 of 3 recordings skipped" in err
    for name in ("pass", "loginok"):
        (tmp_path / "clips" / f"{name}.wav").unlink()
    with pytest.raises(ConfigError, match="none of the 3 recordings"):
        vdata.load_utterances(vdata.read_corpus([str(corpus)]), None, TINY_G)


def test_units_that_are_not_the_audios_are_an_error(tmp_path):
    wav = str(WAVS["loginok"])
    samples = load_audio(wav)
    n = len(encode_batch(load_speech_tokenizer("mel:demo"), [samples])[0]["hubert"])
    for units, msg in (
        ([1] * (n + 2), f"example 'long': {n + 2} unit frames but its audio .* gives {n}"),
        ([1] * (n - 2), f"example 'short': {n - 2} unit frames but its audio .* gives {n}"),
        ([1] * (n - 1) + [100], "example 'big': unit 100 but model.num_embeddings=100"),
    ):
        name = msg.split("'")[1]
        c = _hand_corpus(tmp_path / name, [{"kind": "speech", "id": name, "audio": wav, "hubert": units}])
        with pytest.raises(ConfigError, match=msg):
            vdata.load_utterances(vdata.read_corpus([str(c)]), None, TINY_G)
    one_off = _hand_corpus(tmp_path / "ok", [{"kind": "speech", "id": "ok", "audio": wav, "hubert": [1] * (n + 1)}])
    got = vdata.load_utterances(vdata.read_corpus([str(one_off)]), None, TINY_G)[0]  # within one frame: used
    assert got.frames == min(n + 1, len(samples) // TINY_G.hop)


def test_eval_corpus_reads_the_eval_split_else_the_whole_corpus(tmp_path):
    ex = {"kind": "speech", "audio": str(WAVS["pass"]), "hubert": [1]}
    split = tmp_path / "split"
    _hand_corpus(split, [{**ex, "id": "t"}], "train")
    _hand_corpus(split, [{**ex, "id": "e"}], "eval")
    plain = _hand_corpus(tmp_path / "plain", [{**ex, "id": "p"}])
    assert [e["id"] for e in vdata.read_corpus([str(split)], "train")] == ["t"]
    assert [e["id"] for e in vdata.read_corpus([str(split), str(plain)], "eval")] == ["e", "p"]


@pytest.mark.slow
def test_train_vocoder_from_a_corpus(corpus, tmp_path, capsys):
    """`python -m spiritlm_jax.train_vocoder` with data.corpus only (no tokenizer is loaded: a broken
    data.tokenizer is never touched): 2 steps finish and write vocoder/; neither input is exit 2.
    (~40 s on 2 busy CPU cores, nearly all of it the trainer's parameter initialisation and one compile.)"""
    import yaml

    from spiritlm_jax.config import to_dict
    from spiritlm_jax.speech.vocoder import Vocoder
    from spiritlm_jax.train_vocoder import main
    from spiritlm_jax.vocoder_training.config import LossConfig, VocoderDataConfig, VocoderTrainConfig

    data = VocoderDataConfig(
        corpus=(str(corpus),), eval_corpus=(str(corpus),), eval_items=1, tokenizer="mel:/nowhere", batch_size=2
    )
    cfg = VocoderTrainConfig(
        model=TINY_G,
        discriminators=TINY_D,
        data=dataclasses.replace(data, segment_frames=4),
        loss=LossConfig(gan_start=0),  # one compiled step
        steps=2,
        log_every=1,
        eval_every=0,
        out_dir=str(tmp_path / "run"),
        progress=False,
        devices=1,
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["--config", str(tmp_path / "run.yaml")]) == 0
    run = tmp_path / "run"
    assert Vocoder.load(run / "vocoder").vocode(np.arange(10)).size > 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "mel_l1" in m] == [1, 2]
    assert "3 recordings" in capsys.readouterr().out
    assert main(["--config", str(tmp_path / "run.yaml"), "data.corpus=[]", f"out_dir={tmp_path / 'r2'}"]) == 2
    assert "data.manifest / data.corpus" in capsys.readouterr().err


def test_expressive_streams_come_to_the_unit_rate(tmp_path):
    """Stored pitch (12.5 Hz) and style (1 Hz) streams are upsampled to the unit rate as the vocoder
    does; a model with pitch units and a corpus without them is an error."""
    wav = str(WAVS["loginok"])
    samples = load_audio(wav)
    n = len(encode_batch(load_speech_tokenizer("mel:demo"), [samples])[0]["hubert"])
    ex = {"kind": "speech", "id": "x", "audio": wav, "hubert": list(range(n)), "pitch": list(range(-(-n // 2)))}
    c = _hand_corpus(tmp_path / "c", [{**ex, "style": [5, 9]}])
    model = dataclasses.replace(TINY_G, num_f0_tokens=64, num_style_tokens=100)
    (u,) = vdata.load_utterances(vdata.read_corpus([str(c)]), None, model)
    t = min(n, len(samples) // model.hop)
    np.testing.assert_array_equal(u.units["pitch"], upsample_stream(ex["pitch"], n, 2)[:t])
    np.testing.assert_array_equal(u.units["style"], upsample_stream([5, 9], n, 25)[:t])
    c = _hand_corpus(tmp_path / "no_pitch", [{k: v for k, v in ex.items() if k != "pitch"}])
    with pytest.raises(ConfigError, match="example 'x': the model has pitch units but the corpus gives none"):
        vdata.load_utterances(vdata.read_corpus([str(c)]), None, model)


def test_manifests_and_corpora_combine(corpus, tmp_path, capsys):
    """data.manifest + data.corpus: the manifest's recordings (units from data.tokenizer) first, then the
    corpus'; speaker names from both; a corpus made by another tokenizer spec is a warning."""
    from spiritlm_jax.data.pipeline import DEMO_CORPUS
    from spiritlm_jax.vocoder_training.config import VocoderDataConfig, VocoderTrainConfig
    from spiritlm_jax.vocoder_training.loop import _data

    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": str(WAVS["intro"]), "speaker": "c"}) + "\n")
    spec = f"mel:{DEMO_CORPUS / 'quantizer'}"  # the same quantizer as mel:demo, named otherwise
    data = VocoderDataConfig(manifest=(str(m),), corpus=(str(corpus),), tokenizer=spec, segment_frames=4)
    model = dataclasses.replace(TINY_G, multispkr=True)
    sampler, held, speakers, styles = _data(VocoderTrainConfig(model=model, discriminators=TINY_D, data=data))
    assert [u.name for u in sampler.utts] == [str(WAVS["intro"]), "pass", "intro", "loginok"] and held == []
    assert speakers == ["7", "a", "b", "c"] and styles is None and sampler.utts[0].speaker == 3
    np.testing.assert_array_equal(sampler.utts[0].units["hubert"], sampler.utts[2].units["hubert"])  # same audio
    assert f"was prepared with tokenizer 'mel:demo', data.tokenizer is {spec!r}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"data.manifest / data.corpus: give at least one"):
        _data(VocoderTrainConfig(model=model, discriminators=TINY_D, data=VocoderDataConfig()))
