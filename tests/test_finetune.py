"""Fine-tuning: pair encoding against the generation prompt, response-only targets, bad examples,
exact data resume, LoRA (adapter count, merge == base + adapters), and `python -m spiritlm_jax.finetune`
end to end (exact resume after SIGKILL, frozen base, generate / merge / export from out_dir)."""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiritlm_jax.bundle import save_bundle, write_bundle_manifest
from spiritlm_jax.data import pairs
from spiritlm_jax.data.pipeline import DEMO_CORPUS, DataConfig, batch_iterator, load_tokenizer, pair_dataset
from spiritlm_jax.inference import SpiritLM
from spiritlm_jax.model.llama import Llama, init_params
from spiritlm_jax.model.lora import LoraConfig, adapter_count, combine, lora_model, merge_adapters, split_adapters
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.training.config import TINY_MODEL
from tests.test_train import ROOT, _cli, _env, _losses

CFG = dataclasses.replace(TINY_MODEL, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, max_seq_len=128)
WAV = ROOT / "tests" / "data" / "agent-pass.wav"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(DataConfig())


@pytest.fixture(scope="module")
def speech():
    return MelUnitTokenizer(DEMO_CORPUS / "quantizer")


def _lm(tok, speech):
    """A SpiritLM whose prompts are what `generate` builds (the model is not run)."""
    return SpiritLM(Llama(CFG), None, tok, speech_tokenizer=speech)


def _write(path: Path, examples) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in examples))
    return path


def test_prompt_part_is_the_generation_prompt(tmp_path, tok, speech):
    assert WAV.is_file()
    lm = _lm(tok, speech)
    cases = [  # (pair, generate's inputs, output modality)
        (
            {"prompt": [{"text": "please enter"}], "response": [{"text": "your number"}]},
            [("text", "please enter")],
            "text",
        ),
        ({"prompt": [{"audio": str(WAV)}], "response": [{"text": "password"}]}, [("speech", str(WAV))], "text"),
        (
            {"prompt": [{"text": "Say:"}, {"text": "hello"}], "response": [{"units": "[Hu3][Hu5]"}, {"text": "ok"}]},
            [("text", "Say:"), ("text", "hello")],
            "speech",
        ),
        (
            {"prompt": [{"units": "[Hu1][Hu2]"}], "response": [{"units": "[Hu7][Hu9]"}]},
            None,  # units: checked below
            "speech",
        ),
    ]
    src = _write(tmp_path / "p.jsonl", [c[0] for c in cases])
    cache = pairs.UnitCache(tmp_path / "cache.json", speech.encode_string)
    enc = pairs.encode_pairs(src, tok, cache, 128)
    cache.save()
    assert enc.bad == [] and len(enc.records) == len(cases)
    for rec, (_, inputs, out) in zip(enc.records[:3], cases[:3]):
        want = lm.prompt(inputs, out).ids
        assert rec["tokens"][: rec["n_prompt"]] == want
        assert rec["tokens"][-1] == tok.eos_id
    # text -> text continues the text span: generation reading these new ids gives the response
    r0 = enc.records[0]
    assert lm.continuation_string(lm.prompt(cases[0][1], "text"), r0["tokens"][r0["n_prompt"] : -1])[1] == "your number"
    # text -> speech: the prompt ends with [Speech]; the response's text part gets its [Text] marker
    r2 = enc.records[2]
    assert r2["tokens"][r2["n_prompt"] - 1] == tok.layout.speech_marker_id
    assert tok.layout.text_marker_id in r2["tokens"][r2["n_prompt"] :]
    # speech -> speech continues the unit span without a marker
    r3 = enc.records[3]
    assert r3["tokens"][r3["n_prompt"] :] == [
        tok.layout.unit_id("hubert", 7),
        tok.layout.unit_id("hubert", 9),
        tok.eos_id,
    ]
    assert r3["group"] == 1 and enc.records[0]["group"] == 0
    # audio is tokenized once: the cache holds it, a second encode does not call the tokenizer
    again = pairs.encode_pairs(src, tok, pairs.UnitCache(tmp_path / "cache.json", None), 128)
    assert again.records == enc.records


def test_bad_examples_are_reported_and_skipped(tmp_path, tok):
    good = {"prompt": [{"text": "a b"}], "response": [{"text": "c"}]}
    src = _write(
        tmp_path / "p.jsonl",
        [
            good,
            {"prompt": [{"audio": "missing.wav"}], "response": [{"text": "x"}]},
            {"prompt": [], "response": [{"text": "x"}]},
            {"prompt": [{"text": "x"}], "response": [{"text": " ".join(["word"] * 200)}]},
            "{not json",
            {"prompt": [{"units": "hello"}], "response": [{"text": "x"}]},
        ],
    )
    enc = pairs.encode_pairs(src, tok, pairs.UnitCache(None, None), 64)
    assert len(enc.records) == 1 and enc.records[0]["where"] == f"{src}:1"
    reasons = {b["where"]: b["reason"] for b in enc.bad}
    assert sorted(reasons) == [f"{src}:{i}" for i in range(2, 7)]
    assert "does not exist" in reasons[f"{src}:2"] and "empty" in reasons[f"{src}:3"]
    assert "longer than seq_len 64" in reasons[f"{src}:4"] and "JSON" in reasons[f"{src}:5"]
    n = pairs.write_bad_report(tmp_path / "bad.txt", enc.bad)
    assert n == 5 and (tmp_path / "bad.txt").read_text().splitlines()[0].startswith(f"{src}:2: ")


def _pair_records(tok, n=12):
    recs = []
    for i in range(n):
        prompt = [pairs.Segment(pairs.Modality.TEXT, f"item {i} please")]
        ids, n_prompt, out = pairs.encode_pair(tok, prompt, [pairs.Segment(pairs.Modality.SPEECH, f"[Hu{i}][Hu4]")])
        recs.append({"tokens": ids, "n_prompt": n_prompt, "group": pairs.loss_group(out), "where": str(i)})
    return recs


def test_prompt_tokens_never_have_targets_and_data_resumes_exactly(tmp_path, tok):
    recs = _pair_records(tok)
    path = tmp_path / "enc.jsonl"
    pairs.write_encoded(path, recs)
    cfg = pairs.PairDataConfig(train=str(path), seq_len=32, batch_size=2, read_threads=0)
    it = batch_iterator(pair_dataset([path], seed=3), cfg)
    seen_targets = 0
    by_prompt = {tuple(r["tokens"][: r["n_prompt"]]): r for r in recs}
    for _ in range(8):
        b = next(it)
        for row in range(2):
            seg, tokens, targets = b["segment_ids"][row], b["tokens"][row], b["targets"][row]
            for s in set(seg[seg > 0].tolist()):
                pos = np.flatnonzero(seg == s)
                toks = tokens[pos].tolist()
                rec = next(r for p, r in by_prompt.items() if toks[: len(p)] == list(p))
                t = targets[pos]
                k = rec["n_prompt"]
                assert (t[: k - 1] == -1).all()  # a prompt token is never a target
                np.testing.assert_array_equal(t[k - 1 : -1], toks[k:])  # every response token and EOS is one
                assert t[-1] == -1
                seen_targets += len(toks) - k
    assert seen_targets > 0
    # exact resume: the state after 3 batches continues with the same batches
    a = batch_iterator(pair_dataset([path], seed=3), cfg)
    for _ in range(3):
        next(a)
    state = a.get_state()
    want = [next(a) for _ in range(4)]
    b = batch_iterator(pair_dataset([path], seed=3), cfg)
    b.set_state(json.loads(json.dumps(state)))
    for w in want:
        got = next(b)
        for k in w:
            np.testing.assert_array_equal(got[k], w[k])


def test_lora_merge_equals_base_plus_adapters_and_count():
    lora = LoraConfig(rank=4, alpha=8.0)
    model = lora_model(Llama(CFG), lora)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, CFG.vocab_size)
    full = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"])
    base, adapters = split_adapters(full)
    # non-zero B so the adapters change the output
    adapters = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(x.size), x.shape) * 0.05, adapters)
    with_adapters = jax.jit(model.apply)({"params": combine(base, adapters)}, tokens)
    apply = jax.jit(Llama(CFG).apply)
    merged = apply({"params": merge_adapters(combine(base, adapters), lora)}, tokens)
    plain = apply({"params": base}, tokens)
    assert float(jnp.abs(with_adapters - plain).max()) > 1e-3  # the adapters matter
    np.testing.assert_allclose(np.asarray(merged), np.asarray(with_adapters), atol=1e-5, rtol=0)  # fp32
    # trainable count: sum over targeted projections of r * (in + out), per layer
    d, f, n, k, h, L = CFG.d_model, CFG.d_ff, CFG.n_heads, CFG.n_kv_heads, CFG.dim_per_head, CFG.n_layers
    want = L * 4 * ((d + n * h) + 2 * (d + k * h) + (n * h + d) + 2 * (d + f) + (f + d))
    assert sum(x.size for x in jax.tree.leaves(adapters)) == want == adapter_count(lora, CFG)
    assert adapter_count(LoraConfig(rank=2, targets=r"layers/attn/(q|v)"), CFG) == L * 2 * ((d + n * h) + (d + k * h))


# ----- end to end ---------------------------------------------------------------------------------


def _base(tmp_path) -> Path:
    d = tmp_path / "base"
    save_bundle(d, init_params(CFG, jax.random.PRNGKey(0)), CFG, tokenizer_src=DEMO_CORPUS / "tokenizer.model")
    write_bundle_manifest(
        d, False, speech_tokenizer=str(DEMO_CORPUS / "quantizer"), vocoder=str(DEMO_CORPUS / "vocoder")
    )
    return d


def _finetune(args):
    return _cli("spiritlm_jax.finetune", args)


def _pairs_file(tmp_path) -> Path:
    ex = [{"prompt": [{"text": f"count {i} to"}], "response": [{"units": f"[Hu{i}][Hu{i + 1}]"}]} for i in range(16)]
    ex += [{"prompt": [{"units": f"[Hu{i}][Hu7]"}], "response": [{"text": f"number {i}"}]} for i in range(16)]
    return _write(tmp_path / "pairs.jsonl", ex)


@pytest.mark.slow
def test_finetune_lora_resumes_exactly_after_sigkill_and_its_run_generates_merges_exports(tmp_path):
    """LoRA with dropout and held-out loss: exact resume, adapters only, frozen base, generate, merge, export."""
    from spiritlm_jax.bundle import load_bundle, load_lm
    from spiritlm_jax.bundle.train_layout import restore_params

    base = _base(tmp_path)
    before = jax.tree.map(np.asarray, load_lm(base)[1])
    train = _pairs_file(tmp_path)
    common = [
        f"base={base}",
        f"data.train={train}",
        "data.seq_len=32",
        "data.batch_size=4",
        "lora.rank=4",
        "lora.dropout=0.1",  # dropout keys from (seed, step): the resumed run draws the same masks
        "optim.lr=0.01",
        "steps=8",
        "log_every=1",
        f"data.eval={train}",
        "eval_every=4",
        "eval_batches=1",
        "checkpoint.every=2",
        "checkpoint.async_save=false",
        "progress=false",
    ]
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref = _finetune(common + [f"out_dir={ref_dir}"])
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out
    victim = _finetune(common + [f"out_dir={killed_dir}"])
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "4").is_dir():
        assert victim.poll() is None and time.time() < deadline, "run ended before its step-4 checkpoint"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(_losses(killed_dir)) < 8
    resumed = _finetune(common + [f"out_dir={killed_dir}"])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resumed from" in out, out
    a, b = _losses(ref_dir), _losses(killed_dir)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-6, atol=0)
    assert a[8] < a[1]

    # the run holds only adapters (and their optimizer state); the base is untouched, bit for bit
    params, meta = restore_params(ref_dir / "checkpoints")
    _, adapters = split_adapters(params)
    assert jax.tree.leaves(params) and len(jax.tree.leaves(params)) == len(jax.tree.leaves(adapters))
    assert meta["config"]["lora"]["rank"] == 4
    after = jax.tree.map(np.asarray, load_lm(base)[1])
    jax.tree.map(np.testing.assert_array_equal, before, after)
    loaded = load_bundle(ref_dir)
    for key in ("embed", "final_norm"):  # weights without adapters are the base's exactly
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded.params[key]), before[key])

    # generate from out_dir (base + adapters, through the one bundle loader)
    from spiritlm_jax.generate import main as generate_main

    args = ["--checkpoint", str(ref_dir), "--text", "count", "--max-new-tokens", "3", "--output-modality", "text"]
    assert generate_main(args) == 0

    # merge: a plain bundle with the same logits, exported by llama_to_hf
    from spiritlm_jax.merge import main as merge_main

    merged = tmp_path / "merged"
    assert merge_main(["--src", str(ref_dir), "--out", str(merged)]) == 0
    cfg_m, params_m = load_lm(merged)
    tokens = jnp.asarray([[1, 5, 9, 600, 601, 2]])
    want = Llama(CFG).apply({"params": loaded.params}, tokens)
    np.testing.assert_allclose(
        np.asarray(Llama(cfg_m).apply({"params": params_m}, tokens)), np.asarray(want), atol=1e-6
    )
    hf = subprocess.run(
        [sys.executable, "tools/convert_weights/llama_to_hf.py", "--src", str(merged), "--out", str(tmp_path / "hf")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert hf.returncode == 0, hf.stderr
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_finetune_full_trains_every_weight_and_config_errors(tmp_path, capsys):
    from spiritlm_jax.bundle import load_bundle, load_lm
    from spiritlm_jax.finetune import main

    base = _base(tmp_path)
    train = _pairs_file(tmp_path)
    x = [f"out_dir={tmp_path / 'x'}", "data.seq_len=32"]
    for args, message in [
        ([f"data.train={train}"], "base: give"),
        ([f"base={tmp_path / 'nope'}", f"data.train={train}"], "does not exist"),
        ([f"base={base}", f"data.train={tmp_path / 'none.jsonl'}"], "data.train:"),
        ([f"base={base}", f"data.train={train}", "lora.targets=nothing"], "lora.targets:"),
        ([f"base={base}", f"data.train={train}", "data.seq_len=512"], "max_seq_len"),
    ]:
        assert main(x + args) == 2, args
        assert message in capsys.readouterr().err, args
    run = tmp_path / "full"
    args = [f"base={base}", f"data.train={train}", f"data.eval={train}", "data.seq_len=32", "data.batch_size=8"]
    args += ["lora.rank=0", "steps=3", "eval_every=3", "eval_batches=1", f"out_dir={run}", "progress=false"]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert "eval_loss" in summary["final"]
    b0, b1 = load_lm(base)[1], load_bundle(run).params
    changed = jax.tree.map(lambda x, y: bool(np.any(np.asarray(x) != np.asarray(y))), b0, b1)
    assert all(jax.tree.leaves(changed))  # every weight was trained
