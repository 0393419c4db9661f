"""The Grain input pipeline: packing, windows, mixture, epochs, exact resume, process shards, sources."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax.config import ConfigError, from_dict
from spiritlm_jax.data.batch import BATCH_KEYS, LOSS_GROUP_IDS
from spiritlm_jax.data.pipeline import (
    DataConfig,
    build_eval_batches,
    build_train_iterator,
    check_vocab,
    example_dataset,
    load_tokenizer,
    shard_range,
)
from spiritlm_jax.data.sources import read_examples, shard_files, write_array_record, write_jsonl

WORDS = "the quick brown fox jumps over the lazy dog near the river bank today".split()


def _corpus(root: Path, sp_model, n=40, array_record=False, layout="files"):
    """n examples of each kind (text, speech up to ~16 s, aligned with pauses); eval split = first 5."""
    rng = np.random.default_rng(0)
    exs = {
        "text": [
            {"kind": "text", "id": f"t{i}", "text": " ".join(rng.choice(WORDS, rng.integers(3, 30)))} for i in range(n)
        ],
        "speech": [
            {"kind": "speech", "id": f"s{i}", "hubert": rng.integers(0, 50, rng.integers(5, 400)).tolist()}
            for i in range(n)
        ],
        "aligned": [],
    }
    for i in range(n):
        k = int(rng.integers(2, 25))
        ws = [[str(rng.choice(WORDS)), 0.3 * j, 0.3 * j + 0.2] for j in range(k)]
        exs["aligned"].append(
            {
                "kind": "aligned",
                "id": f"a{i}",
                "words": ws,
                "hubert": rng.integers(0, 50, int(0.3 * k * 25) + 3).tolist(),
            }
        )
    writer, ext = (write_array_record, "array_record") if array_record else (write_jsonl, "jsonl")
    for kind, e in exs.items():
        if layout == "files":  # two shards per kind: <split>/<kind>-0000x.<ext>
            half = len(e) // 2
            writer(root / "train" / f"{kind}-00000.{ext}", e[:half])
            writer(root / "train" / f"{kind}-00001.{ext}", e[half:])
        else:  # the data contract's layout: <kind>/*.<ext>, no split folders
            writer(root / kind / f"part-0.{ext}", e)
        writer(root / "eval" / f"{kind}.{ext}", e[:5])
    shutil.copy(sp_model, root / "tokenizer.model")
    return exs


def _cfg(root, **kw):
    base = dict(corpus=str(root), seq_len=64, batch_size=4, seed=3, text_span=(2, 4), speech_span=(1, 3))
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sp_model):
    root = tmp_path_factory.mktemp("corpus")
    return root, _corpus(root, sp_model)


def _segments(batch):
    """[(tokens, kind)] of every segment, in row order."""
    out = []
    for r in range(batch["tokens"].shape[0]):
        seg = batch["segment_ids"][r]
        for s in range(1, seg.max() + 1):
            m = seg == s
            out.append((batch["tokens"][r][m].tolist(), int(batch["loss_groups"][r][m][0])))
    return out


def test_packing_invariants(corpus):
    root, _ = corpus
    it = build_train_iterator(_cfg(root))
    for _ in range(6):
        b = next(it)
        assert sorted(b) == sorted(BATCH_KEYS)
        assert all(v.shape == (4, 64) and v.dtype == np.int32 for v in b.values())
        for r in range(4):
            seg, pos, tok, tgt, kind = (
                b[k][r] for k in ("segment_ids", "positions", "tokens", "targets", "loss_groups")
            )
            n_real = int((seg > 0).sum())
            assert (seg[:n_real] > 0).all() and (seg[n_real:] == 0).all()  # padding only at the end
            assert seg[0] == 1 and set(np.diff(seg[:n_real])) <= {0, 1}  # 1..n, in order
            for s in range(1, seg.max() + 1):
                idx = np.nonzero(seg == s)[0]
                assert (pos[idx] == np.arange(len(idx))).all()  # positions restart per document
                assert (tgt[idx[:-1]] == tok[idx[1:]]).all()  # next token within the document
                assert tgt[idx[-1]] == -1  # no target across a document boundary
                assert len(set(kind[idx])) == 1
            assert (tgt[n_real:] == -1).all() and (tok[n_real:] == 0).all() and (pos[n_real:] == 0).all()


def test_no_token_lost_and_segments_are_the_windows_in_order(corpus):
    """The packed segments, read in order, are exactly the windows of the example stream, in order."""
    root, _ = corpus
    cfg = _cfg(root)
    ds = example_dataset(cfg)
    expected = [(w.tokens.tolist(), int(w.loss_groups[0])) for j in range(120) for w in ds[j]["windows"]]
    it = build_train_iterator(cfg)
    got = []
    while len(got) < len(expected) - 20:
        got += _segments(next(it))
    assert got == expected[: len(got)]
    assert {k for _, k in got} == {0, 1, 2}


def test_long_speech_examples_become_windows(corpus, sp_model):
    root, exs = corpus
    cfg = _cfg(root, weights=(0.0, 1.0, 0.0), shuffle=False)
    tok = load_tokenizer(cfg)
    prefix = [tok.bos_id, *tok.lead_ids, tok.layout.speech_marker_id]  # what "[Speech]..." encodes to
    ds = example_dataset(cfg)
    n_long = 0
    for j in range(40):
        el = ds[j]
        ws = [w.tokens.tolist() for w in el["windows"]]
        assert all(len(w) <= 64 and w[: len(prefix)] == prefix for w in ws)  # every window is a speech sample
        units = [t for w in ws for t in w[len(prefix) :]]
        assert units[-1] == tok.eos_id and tok.eos_id not in units[:-1]
        whole = tok.encode("[Speech]", bos=True) + [
            tok.layout.hubert_offset + u for u in _dedup(exs["speech"][j]["hubert"])
        ]
        assert prefix + units == whole + [tok.eos_id]  # split, nothing lost or repeated
        n_long += len(ws) > 1
    assert n_long > 10


def _dedup(xs):
    return [x for i, x in enumerate(xs) if i == 0 or xs[i - 1] != x]


def test_mixture_proportions(corpus):
    root, _ = corpus
    for weights in ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.3, 0.1), (0.0, 0.5, 0.5)):
        ds = example_dataset(_cfg(root, weights=weights))
        kinds = np.asarray([ds[j]["kind"] for j in range(600)])
        frac = np.bincount(kinds, minlength=3) / 600
        np.testing.assert_allclose(frac, np.asarray(weights) / sum(weights), atol=0.02)


def test_epochs_reshuffle_and_cover_every_example(corpus):
    root, _ = corpus
    ds = example_dataset(_cfg(root, weights=(1, 0, 0)))
    order = [(ds[j]["epoch"], ds[j]["index"]) for j in range(120)]
    epochs = [[i for e, i in order if e == k] for k in range(3)]
    assert all(sorted(ep) == list(range(40)) for ep in epochs)  # each epoch is a permutation
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(40))
    plain = example_dataset(_cfg(root, weights=(1, 0, 0), shuffle=False))
    assert [plain[j]["index"] for j in range(80)] == list(range(40)) * 2
    # same seed, same data; another seed, other data
    again = example_dataset(_cfg(root, weights=(1, 0, 0)))
    assert [again[j]["index"] for j in range(120)] == [i for _, i in order]
    other = example_dataset(_cfg(root, weights=(1, 0, 0), seed=4))
    assert [other[j]["index"] for j in range(40)] != epochs[0]


def test_spans_redrawn_every_epoch(corpus):
    root, _ = corpus
    ds = example_dataset(_cfg(root, weights=(0, 0, 1), shuffle=False))
    by_epoch = [[w.tokens.tolist() for w in ds[e * 40 + 3]["windows"]] for e in range(4)]
    assert len({json.dumps(x) for x in by_epoch}) > 1


def _assert_batches_equal(a, b):
    for k in BATCH_KEYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_exact_resume_at_every_step_across_epochs(tmp_path, sp_model):
    _corpus(tmp_path, sp_model, n=6)  # 6 examples of a kind: several epochs within a few batches
    cfg = _cfg(tmp_path)
    full = build_train_iterator(cfg)
    expected, states = [], []
    for _ in range(14):
        states.append(json.loads(json.dumps(full.get_state())))  # JSON round trip
        expected.append(next(full))
    ds = example_dataset(cfg)
    consumed = states[-1]["parent"]["next_index"]
    assert max(ds[j]["epoch"] for j in range(consumed)) >= 1  # the run crossed an epoch boundary
    assert any(s["window"] > 0 for s in states)  # including stops in the middle of a long example
    for k in (1, 3, 5, 8, 11):
        resumed = build_train_iterator(cfg)
        resumed.set_state(states[k])
        for step in range(k, 14):
            _assert_batches_equal(next(resumed), expected[step])
    with pytest.raises(ValueError, match="not a data iterator state"):
        build_train_iterator(cfg).set_state({"mix_index": 3})


def test_finite_epochs_end(tmp_path, sp_model):
    exs = _corpus(tmp_path, sp_model, n=6)
    cfg = _cfg(tmp_path, weights=(1, 0, 0), num_epochs=2, batch_size=1, seq_len=256)
    batches = list(build_train_iterator(cfg))
    n_tokens = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    tok = load_tokenizer(cfg)
    assert n_tokens == 2 * sum(len(tok.encode("[Text]" + e["text"], eos=True)) for e in exs["text"])


def test_process_shards_are_disjoint_and_cover_the_data(tmp_path, sp_model):
    _corpus(tmp_path, sp_model, n=41)  # 41: uneven split
    cfg = _cfg(tmp_path, num_epochs=1)
    seen = []
    for p in range(2):
        ds = example_dataset(cfg, "train", p, 2)
        seen.append([(ds[j]["kind"], ds[j]["index"]) for j in range(len(ds))])
    sets = [set(s) for s in seen]
    assert all(len(s) == len(x) for s, x in zip(sets, seen))  # one epoch: no example twice
    assert not sets[0] & sets[1]
    # the mixture stops when the first stream runs out, so count per kind over the full streams
    for k in range(3):
        cfg_k = dataclasses.replace(cfg, weights=tuple(float(i == k) for i in range(3)))
        union = set()
        for p in range(2):
            ds = example_dataset(cfg_k, "train", p, 2)
            union |= {ds[j]["index"] for j in range(len(ds))}
        assert union == set(range(41))
    assert shard_range(41, 0, 2) == (0, 20) and shard_range(41, 1, 2) == (20, 41)
    with pytest.raises(ValueError, match="process_index"):
        shard_range(41, 2, 2)


_TWO_PROCESS = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from spiritlm_jax.data.pipeline import DataConfig, build_train_iterator, example_dataset
    port, pid, corpus, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    cfg = DataConfig(corpus=corpus, seq_len=64, batch_size=4, seed=3, text_span=(2, 4), speech_span=(1, 3))
    it = build_train_iterator(cfg, jax.process_index(), jax.process_count())
    local = next(it)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    glob = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local["tokens"])
    ds = example_dataset(DataConfig(corpus=corpus, num_epochs=1, weights=(1, 0, 0)), "train",
                         jax.process_index(), jax.process_count())
    seen = [ds[j]["index"] for j in range(len(ds))]
    json.dump({"global_shape": list(glob.shape), "local_rows": local["tokens"].tolist(), "seen": seen},
              open(out, "w"))
    jax.distributed.shutdown()
""")


def test_two_real_processes(corpus, tmp_path):
    """Two OS processes joined by jax.distributed: each reads its part, the global batch is 2 x local."""
    root, _ = corpus
    script = tmp_path / "two.py"
    script.write_text(_TWO_PROCESS)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(port), str(p), str(root), str(tmp_path / f"{p}.json")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for p in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out.decode()[-3000:]
    res = [json.loads((tmp_path / f"{p}.json").read_text()) for p in range(2)]
    assert all(r["global_shape"] == [8, 64] for r in res)
    assert set(res[0]["seen"]).isdisjoint(res[1]["seen"]) and set(res[0]["seen"]) | set(res[1]["seen"]) == set(
        range(40)
    )
    assert res[0]["local_rows"] != res[1]["local_rows"]


def test_array_record_and_jsonl_give_the_same_examples(tmp_path, sp_model):
    _corpus(tmp_path / "j", sp_model)
    _corpus(tmp_path / "a", sp_model, array_record=True)
    _corpus(tmp_path / "k", sp_model, array_record=True, layout="kind_dirs")
    for kind in ("text", "speech", "aligned"):
        j = [e for f in shard_files(tmp_path / "j", "train", kind) for e in read_examples(f)]
        a = [e for f in shard_files(tmp_path / "a", "train", kind) for e in read_examples(f)]
        k = [e for f in shard_files(tmp_path / "k", "train", kind) for e in read_examples(f)]
        assert j == a == k and len(j) == 40
    its = [build_train_iterator(_cfg(tmp_path / d)) for d in "jak"]
    for _ in range(3):
        bj, ba, bk = (next(i) for i in its)
        _assert_batches_equal(bj, ba)
        _assert_batches_equal(bj, bk)
    evals = build_eval_batches(_cfg(tmp_path / "a"), 2)
    assert len(evals) == 2 and all(e["tokens"].shape == (4, 64) for e in evals)
    assert build_eval_batches(_cfg(tmp_path / "a"), 2)[1]["tokens"].tolist() == evals[1]["tokens"].tolist()


def test_config_and_corpus_errors(tmp_path, sp_model):
    _corpus(tmp_path, sp_model, n=6)
    with pytest.raises(ConfigError, match="model.vocab_size=256 is smaller"):
        check_vocab(_cfg(tmp_path), 256)
    check_vocab(_cfg(tmp_path), 768)
    with pytest.raises(ConfigError, match="is not a directory"):
        check_vocab(DataConfig(corpus=str(tmp_path / "nope")), 1024)
    (tmp_path / "corpus.json").write_text(json.dumps({"layout": {"text_vocab_size": 32000}}))
    with pytest.raises(ConfigError, match="prepared with 32000"):
        check_vocab(_cfg(tmp_path), 768)
    for bad, match in (
        (dict(weights=(0, 0, 0)), "weights"),
        (dict(seq_len=4), "seq_len"),
        (dict(num_epochs=0), "num_epochs"),
        (dict(speech_span=(3, 2)), "speech_span"),
    ):
        with pytest.raises(ValueError, match=match):
            _cfg(tmp_path, **bad)
    cfg = from_dict(
        DataConfig, {"corpus": str(tmp_path), "weights": [1, 0, 0], "num_epochs": None, "text_span": [3, 5]}
    )
    assert cfg.weights == (1, 0, 0) and cfg.text_span == (3, 5)
    with pytest.raises(ValueError, match="cannot feed 7 processes"):
        example_dataset(_cfg(tmp_path), "train", 0, 7)
    write_jsonl(tmp_path / "train" / "text-00000.jsonl", [{"kind": "text", "id": "broken"}])
    with pytest.raises(ValueError, match=r"bad example .*text-00000.jsonl#0 \(id 'broken'"):
        next(build_train_iterator(_cfg(tmp_path, weights=(1, 0, 0))))
    write_jsonl(tmp_path / "train" / "text-00000.jsonl", [{"kind": "speech", "hubert": [1]}])
    with pytest.raises(ValueError, match="in the 'text' shards"):
        next(build_train_iterator(_cfg(tmp_path, weights=(1, 0, 0), read_threads=0)))


def test_demo_corpus_feeds_all_kinds():
    cfg = DataConfig(seq_len=128, batch_size=8)
    check_vocab(cfg, 1024)
    b = next(build_train_iterator(cfg))
    assert set(np.unique(b["loss_groups"][b["segment_ids"] > 0])) == set(LOSS_GROUP_IDS.values())
    assert b["tokens"].max() < load_tokenizer(cfg).layout.vocab_size
