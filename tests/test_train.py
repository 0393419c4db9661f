"""`python -m spiritlm_jax.train` end to end: default run, exact resume after SIGKILL, two processes,
NaN stop, config errors, shipped configs. Runs in subprocesses (fresh JAX, 1 CPU device each)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax.config import ConfigError, load_config
from spiritlm_jax.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model.n_layers=2",
    "data.seq_len=64",
    "data.batch_size=4",
    "model.max_seq_len=64",
    "log_every=1",
    "progress=false",
]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update({"JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def _cli(module: str, args, **popen):
    """`python -m <module> args` in a fresh process (one CPU device), output merged into stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _train(args, **popen):
    return _cli("spiritlm_jax.train", args, **popen)


def _losses_in(metrics_jsonl: str) -> dict[int, float]:
    out = {}
    for line in metrics_jsonl.splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]  # a re-run step overwrites the killed run's record
    return out


def _losses(run_dir: Path) -> dict[int, float]:
    return _losses_in((run_dir / "metrics.jsonl").read_text())


def test_shipped_configs_load():
    assert load_config(TrainConfig, ROOT / "configs" / "tiny_demo.yaml") == TrainConfig()
    for name in ("spiritlm_base_7b", "spiritlm_expressive_7b", "smollm2_135m_speech"):
        cfg = load_config(TrainConfig, ROOT / "configs" / f"{name}.yaml")
        assert cfg.model.rope_theta == 1e5
    base = load_config(TrainConfig, ROOT / "configs" / "spiritlm_base_7b.yaml")
    assert (base.model.vocab_size, base.data.seq_len, base.optim.lr, base.optim.schedule) == (
        32512,
        4096,
        3e-5,
        "constant",
    )
    assert base.data.batch_size * 8 * base.data.seq_len >= 1_000_000  # ~1M tokens/step on 8 hosts


def test_config_errors_fail_before_compiling(tmp_path):
    from spiritlm_jax.train import main

    assert main([f"out_dir={tmp_path}", "optim.lrr=1"]) == 2
    assert main([f"out_dir={tmp_path}", "model.vocab_size=512"]) == 2  # smaller than the demo layout (1024)
    with pytest.raises(ConfigError, match="exceeds model.max_seq_len"):
        load_config(TrainConfig, None, ["data.seq_len=512"])


def test_default_run_short_form_then_generate(tmp_path):
    run = tmp_path / "run"
    p = _train(["steps=6", "eval_every=3", "checkpoint.every=3", f"out_dir={run}"])
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert "checkpoint:" in out and "python -m spiritlm_jax.generate --checkpoint" in out.splitlines()[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and "eval_loss" in summary["final"]
    assert (run / "tensorboard").is_dir() and sorted(os.listdir(run / "checkpoints"))[:2] == ["3", "6"]

    from spiritlm_jax.bundle import load_pretrained
    from spiritlm_jax.generate import main as generate_main

    model, params = load_pretrained(run)
    assert model.cfg.vocab_size == 1024
    assert (
        generate_main(
            [
                "--checkpoint",
                str(run),
                "--text",
                "please enter",
                "--output-modality",
                "text",
                "--greedy",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )


def test_sigkill_resume_is_exact(tmp_path):
    common = SMALL + ["steps=10", "eval_every=0", "checkpoint.every=2", "checkpoint.async_save=false"]
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref = _train(common + [f"out_dir={ref_dir}"])
    assert ref.wait(timeout=600) == 0

    victim = _train(common + [f"out_dir={killed_dir}"])
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "4").is_dir():
        assert victim.poll() is None and time.time() < deadline, "run ended before its step-4 checkpoint"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = _losses(killed_dir)
    assert max(done) < 10  # it really was cut short
    resumed = _train(common + [f"out_dir={killed_dir}"])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resumed from" in out, out
    a, b = _losses(ref_dir), _losses(killed_dir)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    np.testing.assert_allclose([b[s] for s in range(1, 11)], [a[s] for s in range(1, 11)], rtol=1e-6, atol=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    p = _train(
        SMALL
        + [
            "steps=30",
            "checkpoint.every=2",
            "optim.lr=1e6",
            "optim.grad_clip=0",
            "optim.warmup_steps=0",
            "eval_every=0",
            f"out_dir={tmp_path}",
        ]
    )
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 1 and "training stopped: " in out and "nothing was saved for this step" in out, out
    good = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
    losses = _losses(tmp_path)
    assert all(np.isfinite(losses[s]) for s in good if s in losses)
    import jax

    from spiritlm_jax.bundle.train_layout import restore_params

    for s in good:  # every checkpoint left holds finite parameters (tests/test_reliability_train.py: case 5)
        params, _ = restore_params(tmp_path / "checkpoints", s)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_one_model(tmp_path):
    """Two JAX processes on localhost (gloo CPU collectives), one device each, data=2 mesh."""
    script = (
        "import json, sys\n"
        "from spiritlm_jax.config import load_config\n"
        "from spiritlm_jax.training.config import TrainConfig\n"
        "from spiritlm_jax.training.loop import run\n"
        "cfg = load_config(TrainConfig, None, sys.argv[1:])\n"
        "s = run(cfg)\n"
        "print('RESULT', json.dumps({'first': s['first_loss'], 'final': s['final']['loss']}))\n"
    )
    port = _free_port()
    procs = []
    for pid in range(2):
        env = _env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    script,
                    *SMALL,
                    "steps=4",
                    "eval_every=0",
                    "checkpoint.every=100",
                    f"out_dir={tmp_path}",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(o.split("RESULT ", 1)[1].splitlines()[0]) for o in outs]
    assert results[0] == results[1]  # both processes see the same global loss
    assert np.isfinite(results[0]["final"]) and results[0]["final"] < results[0]["first"]
    assert (tmp_path / "checkpoints" / "4").is_dir()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4  # only process 0 logs


def test_resume_onto_a_different_mesh(tmp_path):
    """Checkpoint written on a 2x2x2 mesh (8 fake devices, in-process), resumed on data=8: the losses
    after the restore match an uninterrupted 2x2x2 run (rtol 1e-5: only reduction order differs)."""
    import jax

    from spiritlm_jax.training.loop import run

    assert jax.device_count() == 8
    base = SMALL + ["eval_every=0", "checkpoint.every=2", "checkpoint.async_save=false", "data.batch_size=8"]
    ref = load_config(
        TrainConfig,
        None,
        base + ["steps=4", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", f"out_dir={tmp_path / 'ref'}"],
    )
    run(ref)
    first = load_config(
        TrainConfig,
        None,
        base + ["steps=2", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", f"out_dir={tmp_path / 'moved'}"],
    )
    run(first)
    moved = load_config(TrainConfig, None, base + ["steps=4", "mesh.data=-1", f"out_dir={tmp_path / 'moved'}"])
    run(moved)
    a, b = _losses(tmp_path / "ref"), _losses(tmp_path / "moved")
    np.testing.assert_allclose([b[s] for s in (3, 4)], [a[s] for s in (3, 4)], rtol=1e-5)


def test_init_from_imported_checkpoint_with_vocab_extension(tmp_path, capsys):
    """A converted HF LLaMA (512 text rows) starts training on the demo layout (1024 rows): its rows are
    kept, the new ones initialised; a mismatched architecture is a config error naming the field."""
    import jax
    import torch
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    from spiritlm_jax.bundle import load_pretrained
    from spiritlm_jax.training.loop import run
    from tools.convert_weights.llama_from_hf import convert

    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        HFConfig(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=352,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    )
    hf.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "jax", progress=False)
    common = SMALL + [
        "steps=2",
        "data.batch_size=8",
        "eval_every=0",
        "checkpoint.async_save=false",
        f"init.checkpoint={tmp_path / 'jax'}",
    ]
    run(load_config(TrainConfig, None, common + [f"out_dir={tmp_path / 'run'}"]))
    assert "initialised from" in capsys.readouterr().out
    _, src = load_pretrained(tmp_path / "jax")
    _, trained = load_pretrained(tmp_path / "run")
    assert trained["embed"]["embedding"].shape == (1024, 128)
    # two small AdamW steps move the imported rows only slightly; the new rows exist and are random
    assert np.abs(np.asarray(trained["embed"]["embedding"][:512]) - np.asarray(src["embed"]["embedding"])).max() < 0.05
    assert float(np.std(np.asarray(trained["embed"]["embedding"][512:]))) > 0.01
    with pytest.raises(ConfigError, match="model.d_ff=512 but the checkpoint"):
        run(load_config(TrainConfig, None, common + ["model.d_ff=512", f"out_dir={tmp_path / 'bad'}"]))
    del jax


def test_moved_run_directory_generates_from_any_cwd(tmp_path, monkeypatch):
    """A run trained on a corpus given by a relative path is a bundle: tokenizer files and the corpus'
    speech tokenizer are copied in (bundle.yaml, paths relative to the run), so after deleting the
    corpus, moving the run and changing directory, it still loads and generates (API and CLI)."""
    import shutil

    from spiritlm_jax.bundle import read_manifest
    from spiritlm_jax.data.pipeline import DEMO_CORPUS
    from spiritlm_jax.inference import OutputModality, SpiritLM

    work = tmp_path / "work"
    shutil.copytree(DEMO_CORPUS, work / "corp1")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spiritlm_jax.train",
            *SMALL,
            "steps=2",
            "eval_every=0",
            "checkpoint.every=2",
            "checkpoint.async_save=false",
            "data.corpus=corp1",
            "out_dir=run",
        ],
        cwd=work,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    shutil.rmtree(work / "corp1")
    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    shutil.move(str(work / "run"), str(moved))
    manifest = read_manifest(moved)
    assert (manifest.lm, manifest.tokenizer, manifest.speech_tokenizer) == ("checkpoints", ".", "speech_tokenizer")
    assert not manifest.expressive and (moved / "tokenizer.model").is_file()
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    lm = SpiritLM.from_checkpoint(moved)
    assert lm.speech_tokenizer is not None and lm.layout.vocab_size <= lm.model.cfg.vocab_size
    gen = lm.generate(
        [("text", "please enter")], output_modality=OutputModality.TEXT, max_new_tokens=4, do_sample=False
    )
    assert len(gen) == 1 and isinstance(gen[0].content, str)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "spiritlm_jax.generate",
            "--checkpoint",
            str(moved),
            "--text",
            "please enter",
            "--output-modality",
            "text",
            "--greedy",
            "--max-new-tokens",
            "4",
        ],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout


def test_help_lists_every_key(capsys):
    from spiritlm_jax.config import describe_keys
    from spiritlm_jax.train import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(key in out for key, *_ in describe_keys(TrainConfig))
    assert "data.corpus" in out and "checkpoint.every" in out and "mesh.fsdp" in out
