"""Converters under bad inputs (docs/reliability.md): a pickle the weights-only loader refuses is one
line and exit 2, a malformed config.json names the file, NaN/inf weights convert with a warning."""

import json

import torch
from transformers import LlamaConfig as HFConfig
from transformers import LlamaForCausalLM

from tools.convert_weights import llama_from_hf

TINY = dict(
    vocab_size=32,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=32,
)


class Payload:
    """Unpickling this would run code (print here); weights-only loading must refuse it."""

    def __reduce__(self):
        return (print, ("code ran while loading",))


def _hf_dir(tmp_path, nan: bool = False):
    torch.manual_seed(0)
    model = LlamaForCausalLM(HFConfig(**TINY)).eval()
    if nan:
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight[0, :3] = float("nan")
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def test_refused_pickle_is_one_line_exit_2(tmp_path, capfd):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", **TINY}))
    torch.save({"model.embed_tokens.weight": torch.zeros(2), "x": Payload()}, d / "pytorch_model.bin")
    assert llama_from_hf.main(["--src", str(d), "--out", str(tmp_path / "out")]) == 2
    out, err = capfd.readouterr()
    assert "code ran" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{d / 'pytorch_model.bin'}: refused to load" in lines[0], err


def test_malformed_config_json_names_the_file(tmp_path, capsys):
    d = _hf_dir(tmp_path)
    (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 16,')
    capsys.readouterr()
    assert llama_from_hf.main(["--src", str(d), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{d / 'config.json'} is not valid JSON" in err[0], err


def test_nan_weights_convert_with_a_warning_naming_the_tensor(tmp_path, capsys):
    d = _hf_dir(tmp_path, nan=True)
    capsys.readouterr()
    assert llama_from_hf.main(["--src", str(d), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "model.layers.0.mlp.up_proj.weight has 3 of" in err and "NaN or infinite" in err, err
