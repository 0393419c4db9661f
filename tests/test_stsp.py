"""STSP: manifest and few-shot readers, the Hugging Face classifier wrappers against running the same
tiny random PyTorch classifiers directly, balanced few-shot prompts, and end-to-end runs of a tiny random
SpiritLM (demo tokenizer + demo unit tokenizer, a tone-generating test-double vocoder) over a manifest in
the release layout built from tests/data recordings: labels, bad items, resume, pinned settings."""

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from spiritlm_jax.evaluation import stsp as S
from spiritlm_jax.inference.spiritlm import SpiritLM
from spiritlm_jax.speech.audio import load_audio
from tests.test_generation import tiny_lm as tiny_generation_lm

DATA = Path(__file__).parent / "data"
WORDS = (
    "please enter your password followed by the pound key agent logged in leave message after tone when done "
    "hang up or press"
).split()
TEXT_LABELS = {0: "negative", 1: "neutral", 2: "positive"}
AUDIO_LABELS = {0: "angry", 1: "default", 2: "happy", 3: "sad"}  # EXPRESSO emotions, as the release's


# ----- tiny classifiers saved as local Hugging Face folders ---------------------------------------
def make_text_classifier(d: Path, id2label=TEXT_LABELS, seed=0) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=64,
    ).save_pretrained(d)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={v: k for k, v in id2label.items()},
    )
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # larger random head so the argmax really depends on the input
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(d)
    return d


def make_audio_classifier(d: Path, id2label=AUDIO_LABELS, seed=0) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={v: k for k, v in id2label.items()},
    )
    model = Wav2Vec2ForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(d)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    return make_text_classifier(d / "text"), make_audio_classifier(d / "audio")


@functools.lru_cache(maxsize=None)
def _hf_text(model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModelForSequenceClassification.from_pretrained(
        model_dir
    ).eval()


@functools.lru_cache(maxsize=None)
def _hf_audio(model_dir):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    return AutoFeatureExtractor.from_pretrained(model_dir), AutoModelForAudioClassification.from_pretrained(
        model_dir
    ).eval()


def direct_text_label(model_dir, text):
    """The text classifier run by hand: tokenizer -> model -> argmax -> id2label."""
    tok, model = _hf_text(str(model_dir))
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt", truncation=True, max_length=64)).logits[0]
    return model.config.id2label[int(logits.argmax())]


def direct_audio_label(model_dir, wav):
    fe, model = _hf_audio(str(model_dir))
    with torch.no_grad():
        logits = model(**fe(wav, sampling_rate=16000, return_tensors="pt")).logits[0]
    return model.config.id2label[int(logits.argmax())]


# ----- tiny LM and data --------------------------------------------------------------------------
class ToneVocoder:
    """Test double: 640 samples of a unit-dependent tone per HuBERT token (so classifier inputs vary)."""

    def __init__(self):
        self.calls = 0

    def vocode(self, units: str, speaker: int = 0):
        self.calls += 1
        ids = [int(u) for u in units.replace("]", "").split("[Hu")[1:] if u.isdigit()]
        t = np.arange(640) / 16000
        return np.concatenate([0.3 * np.sin(2 * np.pi * (80 + 7 * u) * t) for u in ids]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def tiny_lm(seed=0):
    """One per test process (test_storycloze shares it), with a tone-generating vocoder."""
    return tiny_generation_lm(vocoder=ToneVocoder(), seed=seed)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


MANIFEST = [
    {
        "id": 1,
        "wav_path": "emov/agent-pass.wav",
        "asr": "please enter your password followed by the pound key",
        "sentiment": "neutral",
        "split": "test",
        "speaker": "a",
    },
    {"id": 2, "wav_path": "emov/agent-loginok.wav", "asr": "agent logged in", "emotion": "happy", "split": "test"},
    {
        "id": 3,
        "wav_path": "emov/vm-intro.wav",
        "asr": "please leave your message after the tone",
        "emotion": "angry",
        "sentiment": "negative",
    },
    {"id": 4, "wav_path": "emov/missing.wav", "asr": "hang up", "sentiment": "negative"},  # bad in S2x
    {"id": 5, "wav_path": "emov/agent-pass.wav", "emotion": "sad"},  # no asr: bad in T2x
]


def write_release(root: Path, rows=MANIFEST) -> Path:
    """The reference's release layout: <root>/data/..., <root>/manifest/<set>/*.jsonl, manifest/few_shot."""
    (root / "data" / "emov").mkdir(parents=True, exist_ok=True)
    for w in DATA.glob("*.wav"):
        shutil.copy(w, root / "data" / "emov" / w.name)
    man = root / "manifest" / "emov" / "emov.test.jsonl"
    man.parent.mkdir(parents=True, exist_ok=True)
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    few = root / "manifest" / "few_shot"
    few.mkdir(parents=True, exist_ok=True)
    texts = {
        "positive": ("agent logged in", "press the key"),
        "negative": ("hang up", "when done"),
        "neutral": ("please enter", "your password"),
    }
    wavs = {"positive": "emov/agent-loginok.wav", "negative": "emov/vm-intro.wav", "neutral": "emov/agent-pass.wav"}
    for direction, name in S.FEWSHOT_FILES.items():
        in_s, out_s = direction[0] == "S", direction[2] == "S"
        lines = []
        for k in range(2):  # two examples per sentiment
            for s in S.SENTIMENTS:
                lines.append(
                    {
                        "id": f"{s}{k}",
                        "sentiment": s,
                        "prompt": wavs[s] if in_s else texts[s][k],
                        "generation": wavs[s] if out_s else texts[s][1 - k],
                    }
                )
        (few / name).write_text("".join(json.dumps(r) + "\n" for r in lines))
    return man


# ----- tests ------------------------------------------------------------------------------------
def test_manifest_and_fewshot_readers(tmp_path):
    man = write_release(tmp_path / "stsp")
    items = S.load_manifest(man)
    assert [it.sentiment for it in items] == ["neutral", "positive", "negative", "negative", "negative"]
    assert items[0].wav == str(tmp_path / "stsp" / "data" / "emov" / "agent-pass.wav")  # release data root
    assert items[4].text is None and items[1].text == "agent logged in"
    assert S.default_fewshot_dir(man) == tmp_path / "stsp" / "manifest" / "few_shot"
    other = S.load_manifest(man, data_root=tmp_path)
    assert other[0].wav == str(tmp_path / "emov" / "agent-pass.wav")

    bad = tmp_path / "bad.jsonl"
    # extra fields load, with one warning per file naming them (the reference ignores them)
    bad.write_text(
        "".join(json.dumps({"id": i, "sentiment": "neutral", "transcript": "x", "dur": 1}) + "\n" for i in range(3))
    )
    with pytest.warns(UserWarning, match=r"bad.jsonl: ignoring field\(s\) \['dur', 'transcript'\]") as caught:
        assert len(S.load_manifest(bad)) == 3
    assert len(caught) == 1
    cases = [
        ({"wav_path": "a.wav", "sentiment": "neutral"}, "bad.jsonl:1: missing 'id'"),
        ({"id": 1, "sentiment": "happy"}, "sentiment must be one of"),
        ({"id": 1, "emotion": "confused"}, "emotion 'confused' does not map"),
    ]
    for row, msg in cases:
        bad.write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=msg):
            S.load_manifest(bad)
    bad.write_text(
        json.dumps({"id": 1, "sentiment": "neutral"}) + "\n\n" + json.dumps({"id": 1, "sentiment": "neutral"}) + "\n"
    )
    with pytest.raises(ValueError, match="bad.jsonl:3: id 1 appears twice"):
        S.load_manifest(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not valid JSON"):
        S.load_manifest(bad)
    with pytest.raises(FileNotFoundError, match="STSP manifest .* does not exist"):
        S.load_manifest(tmp_path / "none.jsonl")

    pool = S.load_fewshot_pool(man.parent.parent / "few_shot" / "t2s.jsonl")
    assert len(pool) == 6 and pool[0]["generation"] == "emov/agent-loginok.wav"
    bad.write_text(json.dumps({"prompt": "a", "generation": "b", "sentiment": "neutral", "score": 1}) + "\n")
    with pytest.warns(UserWarning, match=r"ignoring field\(s\) \['score'\]"):
        assert len(S.load_fewshot_pool(bad)) == 1
    bad.write_text(json.dumps({"prompt": "a", "sentiment": "neutral"}) + "\n")
    with pytest.raises(ValueError, match=r"missing field\(s\) \['generation'\]"):
        S.load_fewshot_pool(bad)


def test_classifiers_equal_running_them_directly(classifiers, tmp_path):
    text_dir, audio_dir = classifiers
    tc = S.HFTextClassifier(text_dir, device="cpu")
    texts = ["please enter your password", "agent logged in", "hang up", "", "zzz unknown words " * 40]
    got = [tc.predict(t) for t in texts]
    for t, (sent, raw) in zip(texts, got):
        assert raw == direct_text_label(text_dir, t) and sent == raw  # sentiment names map to themselves
    ac = S.HFAudioClassifier(audio_dir, device="cpu")
    wavs = [load_audio(p) for p in sorted(DATA.glob("*.wav"))] + [ToneVocoder().vocode("[Hu3][Hu90][Hu7]")]
    labels = [ac.predict(w) for w in wavs]
    for w, (sent, raw) in zip(wavs, labels):
        assert raw == direct_audio_label(audio_dir, w)
        assert sent == {"angry": "negative", "sad": "negative", "happy": "positive", "default": "neutral"}[raw]
    assert len({r for _, r in got + labels}) > 1, "random classifiers should not give one label for everything"

    # labels that do not name a sentiment: a clear error, a label map, and 'ignore' (leaves the class out)
    generic = make_text_classifier(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ValueError, match=r"label\(s\) \['LABEL_0', 'LABEL_1', 'LABEL_2'\] .* LABEL_0=negative"):
        S.HFTextClassifier(generic, device="cpu")
    with pytest.raises(ValueError, match="does not have"):
        S.HFTextClassifier(generic, label_map={"LABEL_7": "neutral"}, device="cpu")
    mapped = S.HFTextClassifier(
        generic, label_map=S.parse_label_map(["LABEL_0=negative", "LABEL_1=ignore", "LABEL_2=positive"]), device="cpu"
    )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(generic), AutoModelForSequenceClassification.from_pretrained(generic)
    for t in texts:
        with torch.no_grad():
            logits = model(**tok(t, return_tensors="pt", truncation=True, max_length=64)).logits[0]
        want = "negative" if logits[0] > logits[2] else "positive"  # class 1 ignored
        assert mapped.predict(t)[0] == want
    with pytest.raises(ValueError, match="expected NAME="):
        S.parse_label_map(["LABEL_0"])
    with pytest.raises(ValueError, match="cannot load a tokenizer.*--text-tokenizer"):
        no_tok = tmp_path / "no_tok"
        shutil.copytree(generic, no_tok)
        for f in no_tok.glob("tokenizer*"):
            f.unlink()
        S.HFTextClassifier(
            no_tok, label_map={"LABEL_0": "negative", "LABEL_1": "neutral", "LABEL_2": "positive"}, device="cpu"
        )


def test_balanced_fewshot_prefix(lm, tmp_path):
    man = write_release(tmp_path / "stsp")
    root = tmp_path / "stsp" / "data"
    pool = S.load_fewshot_pool(man.parent.parent / "few_shot" / "s2t.jsonl")
    prefix, used = S.fewshot_prefix(lm, pool, "S2T", 6, seed=3, data_root=root)
    assert len(used) == 6 and prefix.endswith("\n") and prefix.count("[Speech]") == 6 and prefix.count("[Text]") == 6
    sentiments = [next(e["sentiment"] for e in pool if e["where"] == w) for w in used]
    assert sorted(sentiments) == sorted(S.SENTIMENTS * 2)  # balanced
    assert S.fewshot_prefix(lm, pool, "S2T", 6, seed=3, data_root=root) == (prefix, used)  # seeded
    # a speech example's prompt is the first half of its wav (as the reference)
    first = next(e for e in pool if e["where"] == used[0])
    wav = load_audio(root / first["prompt"])
    assert prefix.startswith("[Speech]" + lm.speech_tokenizer.encode_string(wav[: len(wav) // 2]) + "[Text]")
    t2s = S.load_fewshot_pool(man.parent.parent / "few_shot" / "t2s.jsonl")
    p3, _ = S.fewshot_prefix(lm, t2s, "T2S", 3, seed=0, data_root=root)
    example = p3.split("\n")[0]
    gen = next(e for e in t2s if "[Text]" + e["prompt"] + "[Speech]" in example)
    wav = load_audio(root / gen["generation"])  # ... and a generation the second half of its wav
    assert example.endswith("[Speech]" + lm.speech_tokenizer.encode_string(wav[len(wav) // 2 :]))
    with pytest.raises(ValueError, match="multiple of 3"):
        S.fewshot_prefix(lm, pool, "S2T", 4, seed=0, data_root=root)
    with pytest.raises(ValueError, match="2 positive example.*9-shot prompts need 3"):
        S.fewshot_prefix(lm, pool, "S2T", 9, seed=0, data_root=root)
    # the query follows in the examples' template
    item = S.load_manifest(man)[1]
    q = S.query_prompt(lm, item, "S2T", prefix)
    assert q == prefix + "[Speech]" + lm.speech_tokenizer.encode_string(item.wav) + "[Text]"
    assert S.query_prompt(lm, item, "T2S") == "[Text]agent logged in[Speech]"  # 0-shot: the reference's prompt


class FlakyText:
    """A classifier (plain callable) that fails on one output: counted as a bad item, not fatal."""

    def __init__(self, inner):
        self.inner, self.n = inner, 0

    def predict(self, text):
        self.n += 1
        if self.n == 2:
            raise RuntimeError("classifier exploded")
        return self.inner.predict(text)


def test_run_end_to_end_labels_bad_items_and_resume(lm, classifiers, tmp_path):
    text_dir, audio_dir = classifiers
    man = write_release(tmp_path / "stsp")
    items = S.load_manifest(man)
    tc, ac = S.HFTextClassifier(text_dir, device="cpu"), S.HFAudioClassifier(audio_dir, device="cpu")
    out = tmp_path / "out"
    # equal new-token counts: text- and speech-prompted directions share compiled decode shapes
    kw = dict(
        text_new_tokens=40,
        speech_new_tokens=40,
        save_audio=True,
        manifest=str(man),
        batch_size=4,
        progress=lambda m: None,
    )
    report = S.run_stsp(lm, items, out, list(S.DIRECTIONS), FlakyText(tc), ac, **kw)
    rows = report["rows"]
    assert (rows["T2T"]["n"], rows["T2T"]["bad"]) == (3, 2)  # item 5 has no asr; one classifier failure
    assert {b["id"] for b in rows["T2T"]["bad_items"]} == {
        "5",
        next(iter(json.loads(r)["id"] for r in (out / "T2T.jsonl").read_text().splitlines() if "exploded" in r)),
    }
    assert (rows["T2S"]["n"], rows["T2S"]["bad"]) == (4, 1)
    assert (rows["S2S"]["n"], rows["S2S"]["bad"]) == (4, 1)  # missing.wav
    assert "item 4" in rows["S2T"]["bad_items"][0]["error"] and "missing.wav" in rows["S2T"]["bad_items"][0]["error"]
    gold = {it.id: it.sentiment for it in items}
    for d in S.DIRECTIONS:
        recs = [json.loads(line) for line in (out / f"{d}.jsonl").read_text().splitlines()]
        ok = [r for r in recs if "error" not in r]
        assert rows[d]["accuracy"] == pytest.approx(np.mean([r["pred"] == gold[r["id"]] for r in ok]))
        # the reference's accuracy: all gold items in the denominator, failed items wrong
        hits = sum(r["pred"] == gold[r["id"]] for r in ok)
        assert rows[d]["accuracy_reference"] == pytest.approx(hits / len(items))
        for r in ok:  # the harness's labels are the classifiers' own
            if d.endswith("T"):
                assert r["label"] == direct_text_label(text_dir, r["generation"])
            else:
                wav, sr = sf.read(r["audio"], dtype="float32")
                assert sr == 16000 and r["audio_seconds"] == pytest.approx(len(wav) / 16000, abs=1e-3)
                assert wav.size == 640 * 40  # 40 forced speech tokens, all HuBERT
                assert r["label"] == direct_audio_label(audio_dir, wav)
    acc = [rows[d]["accuracy"] for d in S.DIRECTIONS]
    assert report["summary"]["average"] == pytest.approx(np.mean(acc))
    prompts = rows["prompts (text)"]
    assert prompts["n"] == 4 and prompts["bad"] == 1
    assert rows["prompts (speech)"]["n"] == 4 and rows["prompts (speech)"]["bad"] == 1
    for line in (out / "prompts_speech.jsonl").read_text().splitlines():
        r = json.loads(line)
        it = next(i for i in items if i.id == r["id"])
        assert r["label"] == direct_audio_label(audio_dir, load_audio(it.wav))
    assert (out / "report.md").read_text().count("| T2S |") == 1
    # the chart needs matplotlib (the `eval` extra; the `test` extra lacks it): without it, no PNG and a note
    assert (out / "report.png").stat().st_size > 1000  # matplotlib is in the test extra

    # resume: a second run generates nothing and reports the same numbers; item errors before generation are retried
    calls = []
    orig = lm.generate_batch
    lm.generate_batch = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        again = S.run_stsp(lm, items, out, list(S.DIRECTIONS), tc, ac, **kw)
    finally:
        del lm.generate_batch
    assert calls == [] and again["rows"]["T2T"] == rows["T2T"] and again["summary"] == report["summary"]
    # settings that change results are pinned to the folder
    with pytest.raises(ValueError, match="holds a run with other settings .*shots"):
        S.run_stsp(lm, items, out, ["T2T"], tc, ac, shots=3, **kw)
    # ... and so is the model: another checkpoint's outputs are never reported as this one's
    with pytest.raises(ValueError, match="holds a run with other settings .*checkpoint"):
        S.run_stsp(lm, items, out, ["T2T"], tc, ac, checkpoint={"path": "/other", "sha256": "x"}, **kw)
    # a run killed while writing a record: the torn line is dropped and only that item is redone
    lines = (out / "S2T.jsonl").read_text().splitlines()
    (out / "S2T.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    lm.generate_batch = lambda *a, **k: calls.append(len(k["prompts"])) or orig(*a, **k)
    try:
        third = S.run_stsp(lm, items, out, ["S2T"], tc, ac, **kw)
    finally:
        del lm.generate_batch
    assert calls == [4]  # one batch (padded to --batch-size) for the one lost item
    redone = [json.loads(line) for line in (out / "S2T.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in redone) == sorted(json.loads(line)["id"] for line in lines)
    assert third["rows"]["S2T"]["n"] == rows["S2T"]["n"]


def test_fewshot_run_and_requirements(lm, classifiers, tmp_path):
    text_dir, _ = classifiers
    man = write_release(tmp_path / "stsp")
    items = S.load_manifest(man)[:3]
    tc = S.HFTextClassifier(text_dir, device="cpu")
    seen = []
    orig = lm.generate_batch

    def spy(*a, **k):
        seen.extend(k["prompts"])
        return orig(*a, **k)

    lm.generate_batch = spy
    try:
        rep = S.run_stsp(
            lm,
            items,
            tmp_path / "o",
            ["S2T"],
            tc,
            None,
            shots=3,
            text_new_tokens=40,
            manifest=str(man),
            batch_size=4,
            progress=lambda m: None,
        )
    finally:
        del lm.generate_batch
    assert rep["rows"]["S2T"]["n"] == 3 and len(rep["few_shot_examples"]["S2T"]) == 3
    prefix = seen[0][: seen[0].rindex("\n") + 1]
    assert all(p.startswith(prefix) and p.endswith("[Text]") for p in seen) and prefix.count("\n") == 3
    with pytest.raises(ValueError, match="direction T2S ends in speech: give an audio classifier"):
        S.run_stsp(lm, items, tmp_path / "o2", ["T2S"], tc, None, manifest=str(man))
    with pytest.raises(ValueError, match="give a text classifier"):
        S.check_requirements(["S2T"], False, True, 0, None)
    with pytest.raises(FileNotFoundError, match="few-shot manifest .*t2t.jsonl"):
        S.check_requirements(["T2T"], True, True, 3, tmp_path)
    no_voc = SpiritLM(lm.model, lm.params, lm.tokenizer, lm.speech_tokenizer, vocoder=None)
    with pytest.raises(ValueError, match="need a vocoder"):
        S.run_stsp(no_voc, items, tmp_path / "o3", ["T2S"], tc, object(), manifest=str(man))
