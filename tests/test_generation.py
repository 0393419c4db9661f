"""SpiritLM: prompt building, modality forcing, output parsing and the ARBITRARY-mode speech rules
(docs/reference.md, generation API), with a tiny random LM, the demo tokenizer and the demo's log-mel unit tokenizer."""

import functools
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.inference.spiritlm import (
    ContentType,
    GenerationConfig,
    GenerationInput,
    OutputModality,
    SpiritLM,
    last_speech_start,
    split_modalities,
)
from spiritlm_jax.model import Llama, LlamaConfig, init_params
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.tokens import Modality, SpiritTokenizer

WAV = Path(__file__).parent / "data" / "agent-loginok.wav"


class RecordingVocoder:
    """Test double: 640 samples per HuBERT token, sample value = token index, records its inputs."""

    def __init__(self):
        self.calls = []

    def vocode(self, units: str, speaker: int = 0):
        self.calls.append((units, speaker))
        return np.arange(units.count("[Hu") * 640, dtype=np.float32)


def tiny_lm(max_seq_len: int = 512, vocoder=None, seed: int = 0) -> SpiritLM:
    """A random 1-layer LM with the demo tokenizer, the demo's unit tokenizer and a test-double vocoder
    (RecordingVocoder unless given); the same (max_seq_len, seed) share parameters across test files."""
    tok = SpiritTokenizer(DEMO_CORPUS / "tokenizer.model")
    cfg, params = _tiny_params(max_seq_len, seed)
    return SpiritLM(
        Llama(cfg),
        params,
        tok,
        speech_tokenizer=MelUnitTokenizer(DEMO_CORPUS / "quantizer"),
        vocoder=vocoder if vocoder is not None else RecordingVocoder(),
    )


@functools.lru_cache(maxsize=None)
def _tiny_params(max_seq_len: int, seed: int):
    cfg = LlamaConfig(
        vocab_size=1024,
        d_model=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        d_ff=64,
        max_seq_len=max_seq_len,
        dtype="float32",
    )
    return cfg, init_params(cfg, jax.random.PRNGKey(seed))


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def test_prompt_building_follows_the_reference(lm):
    units = lm.speech_tokenizer.encode_string(WAV)
    assert units.startswith("[Hu") and units.count("[Hu") > 10
    p = lm.build_prompt(
        [("text", "hello"), ("text", " there"), GenerationInput(str(WAV), ContentType.SPEECH)], OutputModality.TEXT
    )
    assert p == "[Text]hello there[Speech]" + units + "[Text]"
    assert lm.build_prompt([("speech", str(WAV))], OutputModality.SPEECH) == "[Speech]" + units
    assert lm.build_prompt([("text", "hi")], OutputModality.ARBITRARY) == "[Text]hi"


def test_modality_masks(lm):
    lay = lm.layout
    text = lm.allowed_tokens(OutputModality.TEXT)
    speech = lm.allowed_tokens(OutputModality.SPEECH)
    anything = lm.allowed_tokens(OutputModality.ARBITRARY)
    assert text[: lay.text_vocab_size].all() and not text[lay.text_vocab_size :].any()
    eos = lm.tokenizer.eos_id  # transformers exempts EOS from the reference's banned ids
    assert np.flatnonzero(speech[: lay.hubert_offset]).tolist() == [eos]
    assert speech[lay.hubert_offset : lay.num_real_tokens].all()
    assert anything[: lay.num_real_tokens].all() and not anything[lay.num_real_tokens :].any()  # never padding ids


@pytest.mark.parametrize("modality", ["text", "speech"])
def test_forced_generation_stays_in_modality(lm, modality):
    cfg = GenerationConfig(do_sample=True, temperature=1.0, max_new_tokens=30)
    outs, prompt = lm.generate(
        [("text", "please enter")], output_modality=modality, generation_config=cfg, seed=1, return_prompt=True
    )
    if modality == "text":
        assert len(outs) == 1 and outs[0].content_type == ContentType.TEXT and "[Hu" not in outs[0].content
    else:
        assert prompt.endswith("[Speech]") and outs[0].content_type == ContentType.SPEECH
        units, speaker = lm.vocoder.calls[-1]
        assert units.count("[Hu") == 30 and speaker == 2 and "[Text]" not in units


def test_batch_equals_single_and_seed_reproducible(lm):
    cfg = GenerationConfig(do_sample=False, max_new_tokens=8)
    inputs = [[("text", "please enter your password")], [("text", "agent")]]
    batch, _ = lm.generate_batch(inputs, "text", cfg)
    single = [lm.generate(i, output_modality="text", generation_config=cfg) for i in inputs]
    assert [o[0].content for o in batch] == [s[0].content for s in single]
    sampled = GenerationConfig(do_sample=True, temperature=1.2, max_new_tokens=8)
    assert (
        lm.generate(inputs[0], output_modality="text", generation_config=sampled, seed=5)[0].content
        == lm.generate(inputs[0], output_modality="text", generation_config=sampled, seed=5)[0].content
    )


def test_arbitrary_output_rules(lm):
    """Continued prompt speech is vocoded together with the continuation and the prompt's share cut;
    later speech chunks under 25 HuBERT tokens are dropped; text chunks pass through."""
    voc = lm.vocoder
    prompt = "[Text]hi[Speech]" + "[Hu1]" * 10
    gen = "[Hu2]" * 30 + "[Text]ok[Speech]" + "[Hu3]" * 5 + "[Text]bye"
    outs = lm._decode_output(OutputModality.ARBITRARY, gen, prompt, speaker_id=1)
    assert [o.content_type for o in outs] == [ContentType.SPEECH, ContentType.TEXT, ContentType.TEXT]
    assert voc.calls[-1] == ("[Hu1]" * 10 + "[Hu2]" * 30, 1)
    audio = outs[0].content
    cut = math.ceil(40 * 640 * 10 / 41)  # the reference's prompt share: n_prompt / (n + 1)
    assert audio.size == 40 * 640 - cut and audio[0] == cut
    assert [o.content for o in outs[1:]] == ["ok", "bye"]
    short = lm._decode_output(OutputModality.ARBITRARY, "[Hu2]" * 10, prompt, speaker_id=1)
    assert short == []  # continued speech shorter than 25 tokens is dropped


def test_parsing_helpers():
    assert split_modalities("[Text]a b[Speech][Hu1][Pi2][Hu3][Text]c") == [
        ("a b", Modality.TEXT),
        ("[Hu1][Pi2][Hu3]", Modality.SPEECH),
        ("c", Modality.TEXT),
    ]
    assert split_modalities("x [y] z") == [("x [y] z", Modality.TEXT)]
    s = "[Text]a[Speech][Hu1][Hu2]"
    assert s[last_speech_start(s) :] == "[Hu1][Hu2]"


def test_errors(lm):
    with pytest.raises(ValueError, match="interleaved_inputs is empty"):
        lm.generate([], output_modality="text")
    with pytest.raises(ValueError, match="exceeds the model's context"):
        lm.generate([("text", "word " * 400)], output_modality="text", max_new_tokens=200)
    with pytest.raises(ValueError, match="unknown output modality"):
        lm.generate([("text", "hi")], output_modality="video")
    with pytest.raises(ValueError, match="input 0 \\(speech\\).*does not exist"):
        lm.generate([("speech", "/nonexistent.wav")], output_modality="text")
    with pytest.raises(ValueError, match="TEXT or SPEECH"):
        lm.generate([("image", "x")], output_modality="text")
    no_vocoder = SpiritLM(lm.model, lm.params, lm.tokenizer, lm.speech_tokenizer, vocoder=None)
    with pytest.raises(ValueError, match="no vocoder"):
        no_vocoder.generate(
            [("text", "hi")], output_modality="speech", generation_config=GenerationConfig(max_new_tokens=4)
        )


def test_api_is_importable_from_the_package_root():
    import spiritlm_jax

    assert spiritlm_jax.SpiritLM is SpiritLM and spiritlm_jax.OutputModality is OutputModality
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        spiritlm_jax.Nope  # noqa: B018


def test_generate_cli_keeps_input_order_and_lists_keys(capsys):
    from spiritlm_jax.generate import main, parse

    cfg = parse(
        [
            "--checkpoint",
            "x",
            "--text",
            "A: b",
            "--speech",
            "b.wav",
            "--text=C",
            "--inputs",
            "text:D",
            "--prompt",
            "[Text]hi[Speech][Hu3]",
            "--no-force",
            "--greedy",
        ]
    )
    assert cfg.inputs == ["text:A: b", "speech:b.wav", "text:C", "text:D"] and cfg.prompt == "[Text]hi[Speech][Hu3]"
    # transformers' default GenerationConfig, as the reference: greedy, top_k 50, max_length 20
    assert (cfg.force, cfg.greedy, cfg.do_sample, cfg.temperature, cfg.top_k, cfg.speaker) == (
        False,
        True,
        False,
        1.0,
        50,
        2,
    )
    assert (cfg.max_new_tokens, cfg.max_length) == (None, 20)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("checkpoint", "inputs", "output_modality", "temperature", "speaker"))
    assert main(["--checkpoint", "x"]) == 2 and "give --text and/or --speech" in capsys.readouterr().err
    assert main(["--checkpoint", "x", "--inputs", "video:y"]) == 2


# ----- the reference's generate, as a drop-in ------------------------------------------------------
def test_generate_takes_the_reference_signature_and_generation_config_fields(lm):
    from transformers import GenerationConfig as HFGenerationConfig

    from spiritlm_jax.inference import resolve_generation_config

    inputs = [GenerationInput("please enter your", ContentType.TEXT)]
    # positional as the reference: interleaved_inputs, prompt, output_modality, generation_config, force, speaker
    a = lm.generate(inputs, None, OutputModality.TEXT, None, True, 2, False, None, max_new_tokens=6, do_sample=False)
    b = lm.generate(
        interleaved_inputs=inputs, output_modality="text", generation_config=HFGenerationConfig(max_new_tokens=6)
    )
    c = lm.generate(inputs[0], output_modality="TEXT", max_new_tokens=6)  # one input, not a list: as the reference
    assert a[0].content == b[0].content == c[0].content
    # None = transformers' default GenerationConfig: greedy, top_k 50 when sampling, max_length 20 with the prompt
    d = resolve_generation_config(None)
    assert (d.do_sample, d.top_k, d.max_length, d.max_new_tokens) == (False, 50, 20, None)
    prompt = lm.prompt(inputs, "text")
    assert d.new_tokens(len(prompt.ids)) == 20 - len(prompt.ids)
    hf = resolve_generation_config(
        HFGenerationConfig(do_sample=True, temperature=0.8, top_p=0.95), {"max_new_tokens": 9}
    )
    assert (hf.do_sample, hf.temperature, hf.top_p, hf.top_k, hf.max_new_tokens) == (True, 0.8, 0.95, 50, 9)
    with pytest.raises(ValueError, match=r"unknown generation option\(s\) \['max_tokens', 'temprature'\]"):
        lm.generate(inputs, output_modality="text", temprature=0.3, max_tokens=3)
    with pytest.raises(ValueError, match=r"does not implement the generation option\(s\) num_beams=4"):
        lm.generate(inputs, output_modality="text", num_beams=4)
    with pytest.raises(ValueError, match=r"does not implement .*num_beams=2"):
        lm.generate(inputs, output_modality="text", generation_config=HFGenerationConfig(num_beams=2))
    lm.generate(inputs, output_modality="text", num_beams=1, max_new_tokens=2, pad_token_id=-1)  # defaults: fine
    with pytest.raises(ValueError, match="can not both be None"):
        lm.generate()
    with pytest.warns(UserWarning, match="prompt is specified"):
        lm.generate(inputs, "[Text]hello", "text", max_new_tokens=2)


def test_arbitrary_edge_cases_are_the_reference_s(lm):
    """The three edge cases where an id-level reading differed from the reference's string reading."""
    voc = lm.vocoder
    # a new speech chunk (not the first) is dropped when count + 1 < 25: 24 tokens are kept, 23 dropped
    kept = lm._decode_output(OutputModality.ARBITRARY, "hi[Speech]" + "[Hu4]" * 24, "[Text]a", 1)
    dropped = lm._decode_output(OutputModality.ARBITRARY, "hi[Speech]" + "[Hu4]" * 23, "[Text]a", 1)
    assert [o.content_type for o in kept] == [ContentType.TEXT, ContentType.SPEECH]
    assert [o.content_type for o in dropped] == [ContentType.TEXT]
    # the continued prompt: kept when n_new + 1 >= 25; the cut is n_prompt / (n_prompt + n_new + 1)
    outs = lm._decode_output(OutputModality.ARBITRARY, "[Hu2]" * 24, "[Speech]" + "[Hu1]" * 7, 1)
    assert voc.calls[-1][0] == "[Hu1]" * 7 + "[Hu2]" * 24
    assert outs[0].content.size == 31 * 640 - math.ceil(31 * 640 * 7 / 32)
    # where the reference's slicing would cut into the continuation (the decoded prompt loses a leading
    # space), the new ids are decoded alone
    full, new = lm.continuation_string(" [Text]a", lm.tokenizer.encode_after_marker(" b c"))
    assert new == "b c" and full.startswith(" [Text]a")
    # a prompt ending in a newline does not end in speech: the continuation is not joined to it
    outs = lm._decode_output(OutputModality.ARBITRARY, "[Hu2]" * 30, "[Speech]" + "[Hu1]" * 7 + "\n", 1)
    assert voc.calls[-1][0] == "[Hu2]" * 30 and outs[0].content.size == 30 * 640


def test_speech_output_may_end_at_eos_as_the_reference(lm):
    """The reference bans every text id for SPEECH output, but transformers exempts EOS from banned ids,
    so speech ends at EOS (tests/test_release_tokenizer.py measures it on transformers); the option
    `speech_stops_at_eos=False` bans EOS too (speech runs to the length limit)."""
    eos = lm.tokenizer.eos_id
    assert lm.allowed_tokens("speech")[eos] and not lm.allowed_tokens("speech", speech_stops_at_eos=False)[eos]
    assert not lm.allowed_tokens("speech")[: lm.layout.hubert_offset].sum() - 1  # EOS is the one text id
    params = jax.tree.map(lambda x: x, lm.params)
    params["lm_head"]["kernel"] = params["lm_head"]["kernel"].at[:, eos].set(100.0)
    strong = SpiritLM(lm.model, params, lm.tokenizer, lm.speech_tokenizer, RecordingVocoder())
    full = strong.generate(
        prompt="[Speech][Hu1][Hu2]", output_modality="speech", max_new_tokens=12, speech_stops_at_eos=False
    )
    assert strong.vocoder.calls[-1][0].count("[Hu") == 12 and len(full) == 1
    n_calls = len(strong.vocoder.calls)
    stopped = strong.generate(prompt="[Speech][Hu1][Hu2]", output_modality="speech", max_new_tokens=12)
    assert stopped == [] or strong.vocoder.calls[-1][0].count("[Hu") < 12  # EOS ended it early
    assert len(strong.vocoder.calls) <= n_calls + 1


def test_spiritlm_entry_point_finds_names_in_the_tree(tmp_path, monkeypatch):
    from spiritlm_jax.inference import Spiritlm

    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    with pytest.raises(ValueError, match="set SPIRITLM_CHECKPOINTS_DIR"):
        Spiritlm("spirit-lm-base-7b")
    with pytest.raises(ValueError, match="unknown model name"):
        Spiritlm("spirit-lm-huge")
    monkeypatch.setenv("SPIRITLM_CHECKPOINTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        Spiritlm("spirit-lm-expressive-7b")
