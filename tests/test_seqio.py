"""The optional seqio extra (spiritlm_jax/data/seqio_tasks.py): vocabulary, tasks, mixture, errors.

seqio is installed by the `test` extra, so these checks run in CI; nothing here is skipped.
TensorFlow is never imported into the pytest process (it would stay loaded beside torch and JAX for
the rest of the suite): every `check_*` function below runs in ONE child process
(`python tests/test_seqio.py --run-checks DIR`, one TensorFlow import), which prints one JSON
result line per check; each check is then reported as its own pytest test. A second child process
checks that the rest of the package never imports seqio/TensorFlow and that importing
seqio_tasks without seqio fails with the install hint.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "spiritlm_jax" / "data" / "demo"
KIND_OF_TASK = {"text": "text", "speech": "speech", "interleaved": "aligned"}

MIXED = [
    "[Text]hello[Speech][Hu3][Hu7]",
    "[Text]please enter your pin number[Speech][Hu0][Hu99][Hu500][Text] then press the pound key",
    "",
    "[Speech]",
    "[Hu1][Hu1][Hu2]",
    "  leading and trailing spaces  ",
    "[Text][Speech][Text]",
    "thank you for calling[Text]goodbye",
    "[Text]a [Speech][Hu12] b[Hu4]c",
]


# ----- checks (run in the child process) ----------------------------------------------------------
def _demo_tok():
    from spiritlm_jax.data.pipeline import DataConfig, load_tokenizer

    return load_tokenizer(DataConfig())


@functools.lru_cache(maxsize=None)
def _source(corpus, split, kind):
    from spiritlm_jax.data.sources import ExampleSource, shard_files

    return ExampleSource(shard_files(corpus, split, kind))


def _grain_tokens(corpus, split, kind, index, tok, seed=0, text_span=(10, 30), speech_span=(5, 15)):
    """The Grain path's sequence of one example (epoch 0): interleave.encode_example on the same shards."""
    from spiritlm_jax.data.batch import LOSS_GROUP_IDS
    from spiritlm_jax.data.interleave import encode_example, example_rng

    src = _source(corpus, split, kind)
    return encode_example(src[index], tok, example_rng(seed, 0, index, LOSS_GROUP_IDS[kind]), text_span, speech_span)


def check_vocabulary_ids():
    import tensorflow as tf

    from spiritlm_jax.data.seqio_tasks import SpiritVocabulary

    tok = _demo_tok()
    v = SpiritVocabulary(tok)
    assert v.vocab_size == tok.layout.vocab_size == 1024 and v._base_vocab_size == 1024
    assert (v.bos_id, v.eos_id, v.unk_id, v.pad_id) == (1, 2, 0, 0)
    assert v == SpiritVocabulary(DEMO / "tokenizer.model") and v != SpiritVocabulary(DEMO / "tokenizer.model", True)
    for s in MIXED:
        ref = tok.encode(s, bos=False, eos=False)
        assert list(v.encode(s)) == ref, s
        assert v.encode_tf(tf.constant(s)).numpy().tolist() == ref, s
    batch = v.encode_tf(tf.constant(MIXED))
    assert batch.to_list() == [tok.encode(s, bos=False) for s in MIXED]


def check_vocabulary_tf_matches_python_on_corpus():
    """encode_tf (tensorflow-text's SentencePiece op) == SpiritTokenizer.encode on every demo text."""
    import tensorflow as tf

    from spiritlm_jax.data.seqio_tasks import SpiritVocabulary
    from spiritlm_jax.data.sources import read_examples

    tok = _demo_tok()
    v = SpiritVocabulary(tok)
    texts = [ex["text"] for kind in ("text", "aligned") for ex in read_examples(DEMO / "train" / f"{kind}.jsonl.gz")]
    texts += [" ".join(w[0] for w in ex["words"]) for ex in read_examples(DEMO / "train" / "aligned.jsonl.gz")]
    assert len(texts) > 1400
    got = v.encode_tf(tf.constant(texts)).to_list()
    want = [tok.encode(t, bos=False) for t in texts]
    bad = [t for t, g, w in zip(texts, got, want) if g != w]
    assert not bad, f"{len(bad)} texts differ, e.g. {bad[:2]}"
    dec = [x.decode() for x in v.decode_tf(tf.ragged.constant(want, dtype=tf.int32)).numpy()]
    assert dec == [tok.decode(w) for w in want]


def check_vocabulary_decode():
    import tensorflow as tf

    from spiritlm_jax.data.seqio_tasks import SpiritVocabulary

    tok = _demo_tok()
    v = SpiritVocabulary(tok)
    for s in MIXED:
        ids = tok.encode(s, bos=False)
        ref = tok.decode(ids)
        assert v.decode(ids) == ref, s
        assert v.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == ref, s
        # BOS/EOS dropped, stop at the first EOS, seqio padding (0) dropped
        framed = [tok.bos_id] + ids + [tok.eos_id] + tok.encode("[Hu5] junk", bos=False) + [0, 0]
        assert v.decode(framed) == ref
        assert v.decode_tf(tf.constant(framed, tf.int32)).numpy().decode() == ref
    # ids with no token (a padding row of the layout, past the vocabulary, negative) -> <unk>, which is
    # id 0 in the demo model (as in LLaMA-2's), seqio's padding: so they are dropped like padding
    ids = tok.encode(MIXED[1], bos=False)
    noisy = ids[:3] + [tok.layout.num_real_tokens, 5000, -3] + ids[3:]
    assert v.unk_id == v.pad_id == 0
    assert v.decode(noisy) == tok.decode(ids) == v.decode_tf(tf.constant(noisy, tf.int32)).numpy().decode()
    # batched: dense [b, n] padded with 0 (seqio's pad) and ragged
    rows = [tok.encode(s, bos=False) for s in MIXED]
    dense = tf.constant([r + [0] * (40 - len(r)) for r in rows], tf.int32)
    want = [tok.decode(r) for r in rows]
    assert [x.decode() for x in v.decode_tf(dense).numpy()] == want
    assert [x.decode() for x in v.decode_tf(tf.ragged.constant(rows, dtype=tf.int32)).numpy()] == want


def check_vocabulary_layouts_and_errors():
    import tensorflow as tf

    from spiritlm_jax.data.seqio_tasks import SpiritVocabulary
    from spiritlm_jax.tokens import SpiritTokenizer, TokenLayout

    base = SpiritVocabulary(_demo_tok())
    expr = SpiritVocabulary(DEMO / "tokenizer.model", expressive=True)
    assert expr.vocab_size == expr.tokenizer.layout.vocab_size == 1280
    s = "[Speech][St81][Pi13][Hu78][Hu42][Pi3][Text]the end"
    ref = expr.tokenizer.encode(s, bos=False)
    assert expr.encode_tf(tf.constant(s)).numpy().tolist() == ref == list(expr.encode(s))
    assert expr.decode_tf(tf.constant(ref)).numpy().decode() == expr.decode(ref) == expr.tokenizer.decode(ref)
    for bad in ("[Speech][Pi3]", "[Hu501]", "x[Hu07]y"):  # pitch in BASE, out of range, leading zero
        try:
            base.encode(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"python encode accepted {bad!r}")
        try:
            base.encode_tf(tf.constant(bad))
        except tf.errors.InvalidArgumentError as e:
            assert "not part of this vocabulary's layout" in str(e)
        else:
            raise AssertionError(f"encode_tf accepted {bad!r}")
    # an added literal token (as Hugging Face tokenizer files may list) is split out by both paths
    lit = SpiritVocabulary(
        SpiritTokenizer(DEMO / "tokenizer.model", layout=TokenLayout(520), added_tokens={"<pad>": 515})
    )
    s = "please<pad>[Text]hold<pad>"
    ref = lit.tokenizer.encode(s, bos=False)
    assert 515 in ref and lit.encode_tf(tf.constant(s)).numpy().tolist() == ref == list(lit.encode(s))
    assert lit.decode_tf(tf.constant(ref)).numpy().decode() == lit.decode(ref) == lit.tokenizer.decode(ref)


def check_tasks_match_grain(tmp):
    """Every registered task yields exactly the Grain path's sequences of the same shards."""
    import seqio

    from spiritlm_jax.data.seqio_tasks import register_tasks

    tok = _demo_tok()
    names = register_tasks("demo", "t_match")
    assert names == {
        "text": "t_match_text",
        "speech": "t_match_speech",
        "interleaved": "t_match_interleaved",
        "mixture": "t_match_mixture",
    }
    for task_kind, kind in KIND_OF_TASK.items():
        task = seqio.get_mixture_or_task(names[task_kind])
        assert set(task.splits) == {"train", "eval"}
        assert task.output_features["targets"].vocabulary.vocab_size == 1024
        ds = task.get_dataset({"targets": 4096}, split="train", shuffle=False)  # no example is longer
        got = list(ds.take(40).as_numpy_iterator())
        assert len(got) == 40
        for i, ex in enumerate(got):
            enc = _grain_tokens(DEMO, "train", kind, i, tok)
            assert ex["index"] == i and ex["loss_group"] == enc.loss_groups[0]
            assert ex["targets"].tolist() == enc.tokens.tolist(), (task_kind, i)
            assert ex["targets"][0] == tok.bos_id and ex["targets"][-1] == tok.eos_id
            assert tok.encode(ex["targets_pretokenized"].decode(), bos=False) == enc.tokens[1:-1].tolist()
    # T5X's decoder-only feature converter packs a task's examples (here the last one, interleaved)
    row = next(seqio.DecoderFeatureConverter(pack=True)(ds.take(40), {"targets": 4096}).as_numpy_iterator())
    seg, tgt = row["decoder_segment_ids"], row["decoder_target_tokens"]
    assert tgt.shape == (4096,) and seg.max() >= 2
    examples = [ex["targets"].tolist() for ex in got]
    assert all(tgt[seg == k].tolist() in examples for k in range(1, seg.max() + 1))


def check_windows_match_grain(tmp):
    """With a sequence length, long examples are cut exactly as interleave.windows cuts them."""
    import seqio

    from spiritlm_jax.data.interleave import windows
    from spiritlm_jax.data.seqio_tasks import register_tasks

    tok = _demo_tok()
    names = register_tasks("demo", "t_win")
    seq_len = 48
    # speech windows (each starts with BOS [Speech]) on the eval split; consecutive pieces on train
    for task_kind, kind, split in (("speech", "speech", "eval"), ("interleaved", "aligned", "train")):
        ds = seqio.get_mixture_or_task(names[task_kind]).get_dataset({"targets": seq_len}, split=split, shuffle=False)
        got = [(int(ex["index"]), ex["targets"].tolist()) for ex in ds.take(50).as_numpy_iterator()]
        prefix = [tok.bos_id, *tok.lead_ids, tok.layout.speech_marker_id] if kind == "speech" else None
        want = [
            (i, w.tokens.tolist())
            for i in range(got[-1][0] + 1)
            for w in windows(_grain_tokens(DEMO, split, kind, i, tok), seq_len, prefix)
        ]
        assert got == want[: len(got)], task_kind
        assert max(len(t) for _, t in got) == seq_len and len({i for i, _ in got}) < len(got)  # really cut


def check_mixture(tmp):
    import numpy as np
    import seqio

    from spiritlm_jax.data.interleave import windows
    from spiritlm_jax.data.pipeline import DataConfig
    from spiritlm_jax.data.seqio_tasks import register_tasks

    tok = _demo_tok()
    names = register_tasks("demo", "t_mix")
    mix = seqio.get_mixture_or_task(names["mixture"])
    assert sorted(t.name for t in mix.tasks) == sorted(names[k] for k in KIND_OF_TASK)
    assert {t.name: mix.get_rate(t) for t in mix.tasks} == pytest.approx({names[k]: 1 / 3 for k in KIND_OF_TASK})
    seq_len = 64
    ds = mix.get_dataset(
        {"targets": seq_len},
        split="train",
        seed=7,
        shuffle=True,
        num_epochs=1,
        passthrough_features=["loss_group", "index"],
    )
    got = list(ds.take(240).as_numpy_iterator())
    kinds = np.array([int(ex["loss_group"]) for ex in got])
    frac = np.bincount(kinds, minlength=3) / len(got)
    assert np.all(np.abs(frac - 1 / 3) < 0.1), frac  # sampled (seed 7); 3.3 standard deviations
    by_id = {0: "text", 1: "speech", 2: "aligned"}
    for ex in got[:40]:  # each element is one of the Grain windows of its example
        kind = by_id[int(ex["loss_group"])]
        prefix = [tok.bos_id, *tok.lead_ids, tok.layout.speech_marker_id] if kind == "speech" else None
        wins = [
            w.tokens.tolist()
            for w in windows(_grain_tokens(DEMO, "train", kind, int(ex["index"]), tok), seq_len, prefix)
        ]
        assert ex["targets"].tolist() in wins
    # the DataConfig weights: zero-weight kinds stay registered as tasks but leave the mixture
    only = register_tasks(DataConfig(weights=(1.0, 0.0, 0.0)), "t_only")
    assert [t.name for t in seqio.get_mixture_or_task(only["mixture"]).tasks] == [only["text"]]
    # an existing name is seqio's error unless overwrite=True
    try:
        register_tasks("demo", "t_mix")
    except ValueError as e:
        assert "t_mix" in str(e)
    else:
        raise AssertionError("re-registering t_mix did not fail")
    register_tasks("demo", "t_mix", overwrite=True)


def check_sharding_and_shuffle(tmp):
    import seqio

    from spiritlm_jax.data.pipeline import shard_range
    from spiritlm_jax.data.seqio_tasks import register_tasks

    task = seqio.get_mixture_or_task(register_tasks("demo", "t_shard")["text"])
    n = task.num_input_examples("train")

    def indices(p, shuffle, seed=None):
        return [
            int(ex["index"])
            for ex in task.get_dataset(
                None, split="train", shuffle=shuffle, seed=seed, shard_info=seqio.ShardInfo(p, 3)
            ).as_numpy_iterator()
        ]

    assert indices(0, False) == list(range(*shard_range(n, 0, 3)))  # the Grain path's contiguous block
    a = indices(1, True, seed=3)  # shuffled within the block, the same for the same seed
    assert sorted(a) == list(range(*shard_range(n, 1, 3))) and a != sorted(a) and indices(1, True, seed=3) == a


def check_array_record_expressive(tmp):
    """ArrayRecord shards in the contract layout (<kind>/part-*.array_record), EXPRESSIVE layout with
    pitch and style streams, non-default seed and spans: still exactly the Grain sequences."""
    import shutil

    import numpy as np
    import seqio

    from spiritlm_jax.data.pipeline import DataConfig, load_tokenizer
    from spiritlm_jax.data.seqio_tasks import register_tasks
    from spiritlm_jax.data.sources import write_array_record

    root = Path(tmp) / "xcorpus"
    rng = np.random.default_rng(1)
    words = "please enter the number you wish to call then press the pound key".split()
    exs = {
        "text": [{"kind": "text", "id": f"t{i}", "text": " ".join(rng.choice(words, 6))} for i in range(6)],
        "speech": [],
        "aligned": [],
    }
    for i in range(6):
        sec = float(rng.uniform(1, 4))
        streams = {
            "hubert": rng.integers(0, 90, int(sec * 25)).tolist(),
            "pitch": rng.integers(0, 64, int(sec * 12.5)).tolist(),
            "style": rng.integers(0, 100, int(sec) + 1).tolist(),
        }
        exs["speech"].append({"kind": "speech", "id": f"s{i}", **streams})
        k = int(sec * 2.5)
        ws = [[str(rng.choice(words)), 0.4 * j, 0.4 * j + 0.3] for j in range(k)]
        exs["aligned"].append({"kind": "aligned", "id": f"a{i}", "words": ws, **streams})
    for kind, e in exs.items():
        write_array_record(root / kind / "part-00000.array_record", e[:3])
        write_array_record(root / kind / "part-00001.array_record", e[3:])
    shutil.copy(DEMO / "tokenizer.model", root / "tokenizer.model")
    cfg = DataConfig(corpus=str(root), expressive=True, seed=11, text_span=(1, 2), speech_span=(1, 3))
    tok = load_tokenizer(cfg)
    names = register_tasks(cfg, "t_xpr")
    saw_pitch = False
    for task_kind, kind in (("speech", "speech"), ("interleaved", "aligned")):  # text has no unit streams
        task = seqio.get_mixture_or_task(names[task_kind])
        assert task.splits == ("train",)
        ds = task.get_dataset(None, split="train", shuffle=False)
        got = [ex["targets"].tolist() for ex in ds.as_numpy_iterator()]
        want = [_grain_tokens(root, "train", kind, i, tok, 11, (1, 2), (1, 3)).tokens.tolist() for i in range(6)]
        assert got == want, task_kind
        saw_pitch |= any(tok.layout.pitch_offset <= t < tok.layout.vocab_size for g in got for t in g)
    assert saw_pitch


def check_bad_corpus(tmp):
    import seqio
    import tensorflow as tf

    from spiritlm_jax.data.seqio_tasks import register_tasks
    from spiritlm_jax.data.sources import write_jsonl

    def raises(fn, exc, *words):
        try:
            fn()
        except exc as e:
            assert all(w in str(e) for w in words), str(e)
        else:
            raise AssertionError(f"no {exc.__name__}")

    tmp = Path(tmp)
    raises(lambda: register_tasks(tmp / "nowhere", "t_bad0"), FileNotFoundError, "nowhere", "is not a directory")
    empty = tmp / "empty"
    empty.mkdir()
    raises(lambda: register_tasks(empty, "t_bad1"), ValueError, "tokenizer.model", "does not exist")
    (empty / "tokenizer.model").write_bytes((DEMO / "tokenizer.model").read_bytes())
    raises(lambda: register_tasks(empty, "t_bad2"), ValueError, "has no shards for any kind")
    (empty / "tokenizer.model").write_bytes(b"not a model")
    raises(lambda: register_tasks(empty, "t_bad3"), ValueError, "is not a SentencePiece model")
    # a bad example is reported with its shard file and record when read
    bad = tmp / "badex"
    write_jsonl(
        bad / "train" / "speech.jsonl",
        [{"kind": "speech", "id": "ok", "hubert": [1, 2]}, {"kind": "speech", "id": "broken", "hubert": [1, 9999]}],
    )
    (bad / "tokenizer.model").write_bytes((DEMO / "tokenizer.model").read_bytes())
    task = seqio.get_mixture_or_task(register_tasks(bad, "t_bad4")["speech"])
    raises(
        lambda: list(task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator()),
        tf.errors.OpError,
        "speech.jsonl#1",
        "broken",
        "out of range",
    )


CHECKS = {name[len("check_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def _run_checks(tmp: str) -> None:
    """Child process: run every check, one JSON line each."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, fn in CHECKS.items():
        t0 = time.perf_counter()
        try:
            fn(tmp) if fn.__code__.co_argcount else fn()
            res = {"check": name, "ok": True}
        except BaseException:  # noqa: BLE001 - reported to the parent
            res = {"check": name, "ok": False, "error": traceback.format_exc()}
        res["seconds"] = round(time.perf_counter() - t0, 2)
        print("SEQIO_CHECK " + json.dumps(res), flush=True)


# ----- the pytest side ----------------------------------------------------------------------------
def _child_env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seqio")
    proc = subprocess.run(
        [sys.executable, __file__, "--run-checks", str(tmp)],
        cwd=REPO,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("SEQIO_CHECK "):
            r = json.loads(line[len("SEQIO_CHECK ") :])
            out[r["check"]] = r
    if proc.returncode != 0 or len(out) != len(CHECKS):
        pytest.fail(
            f"the seqio check process failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return out


@pytest.mark.parametrize("name", list(CHECKS))
def test_seqio(results, name):
    r = results[name]
    assert r["ok"], r.get("error")


_ISOLATION = r"""
import importlib, pkgutil, sys
import spiritlm_jax
skip = {"spiritlm_jax.data.seqio_tasks", "spiritlm_jax.beam_runner"}  # beam_runner needs the beam extra
mods = [m.name for m in pkgutil.walk_packages(spiritlm_jax.__path__, "spiritlm_jax.") if m.name not in skip]
for m in mods:
    importlib.import_module(m)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio", "tensorflow_text"))
assert not leaked, leaked[:5]
print("IMPORTED", len(mods))

class Block:  # seqio "not installed"
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "seqio":
            raise ImportError("No module named 'seqio'")
sys.meta_path.insert(0, Block())
try:
    import spiritlm_jax.data.seqio_tasks
except ImportError as e:
    print("MESSAGE", e)
"""


def test_rest_of_package_never_imports_seqio_and_missing_extra_is_explained():
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATION], cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = int(proc.stdout.split("IMPORTED ")[1].split()[0])
    assert n > 20  # really walked the package
    msg = proc.stdout.split("MESSAGE ", 1)[1]
    assert 'pip install -e ".[seqio]"' in msg and "seqio" in msg


if __name__ == "__main__" and sys.argv[1:2] == ["--run-checks"]:
    _run_checks(sys.argv[2])
