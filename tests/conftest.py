"""Test-wide set-up: CPU only, 8 fake devices so sharding tests run in-process."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory):
    """A 200-piece SentencePiece BPE model trained on tests/data/english.txt (BOS 1, EOS 2)."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("sp")
    spm.SentencePieceTrainer.train(
        input=str(DATA / "english.txt"),
        model_prefix=str(d / "tokenizer"),
        vocab_size=200,
        model_type="bpe",
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    return d / "tokenizer.model"
