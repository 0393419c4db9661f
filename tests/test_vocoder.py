"""Vocoder: unit strings / unit dicts -> audio, against the test's PyTorch reference CodeGenerator
(tests/test_hifigan.py; max |diff| <= 1e-4, justified there), bucketed compilation, batches, errors,
wav output and the saved directory format."""

import numpy as np
import pytest
import soundfile as sf
import torch

from spiritlm_jax.buckets import half_octave_bucket
from spiritlm_jax.io import save_component
from spiritlm_jax.speech.hifigan import DurPredictorConfig, HifiGanConfig
from spiritlm_jax.speech.vocoder import FRAME_BUCKET_MIN, VOCODER_SPEC, Vocoder, write_wav
from spiritlm_jax.tokens import string_to_units, units_to_string
from tests.test_hifigan import RefCodeGenerator, ref_state_dict, ref_upsample
from tools.convert_weights.hifigan_from_pt import params_from_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")

TINY = dict(
    upsample_rates=(4, 4),
    upsample_kernel_sizes=(8, 8),
    upsample_initial_channel=16,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1, 3, 5),),
)
BASE = HifiGanConfig(
    num_embeddings=501,
    embedding_dim=8,
    num_speakers=4,
    num_styles=10,
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.0),
    **TINY,
)
EXPRESSIVE = HifiGanConfig(
    num_embeddings=501,
    embedding_dim=8,
    num_f0_tokens=64,
    num_style_tokens=100,
    num_speakers=3,
    multistyle=False,
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.0),
    **TINY,
)
TOL = 1e-4


def make(cfg, seed=0):
    ref = RefCodeGenerator(cfg).randomize(seed).eval()
    params = params_from_state_dict(ref_state_dict(ref), cfg)
    names = dict(
        speakers=[f"spk{i}" for i in range(cfg.num_speakers)],
        styles=[f"st{i}" for i in range(cfg.num_styles)] if cfg.multistyle else None,
    )
    return ref, Vocoder(params, cfg, **names, max_batch=4)


@pytest.fixture(scope="module")
def base():
    return make(BASE)


@pytest.fixture(scope="module")
def expressive():
    return make(EXPRESSIVE, seed=1)


def run_ref(ref, hubert, pitch=None, style=None, spkr=2, gstyle=8, dur_pred=True):
    t = lambda a: None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.long)
    with torch.no_grad():
        return ref(t(hubert), t(pitch), t(style), spkr=spkr, style=gstyle, dur_pred=dur_pred).numpy()


def test_base_string_matches_reference_with_defaults(base):
    ref, voc = base
    hubert = np.random.default_rng(0).integers(0, 501, 40)
    s = "[Speech]" + units_to_string(hubert=hubert)  # deduplicated, as the LM writes it
    got = voc.vocode(s)  # the reference's defaults: speaker 2, style 8, durations on
    want = run_ref(ref, string_to_units(s)["hubert"])
    assert got.dtype == np.float32 and got.shape == want.shape and np.abs(got - want).max() <= TOL
    assert np.array_equal(voc.vocode(s, speaker="spk2", style="st8"), got)
    other = voc.vocode(s, speaker=1, style=3)
    assert np.abs(other - run_ref(ref, string_to_units(s)["hubert"], spkr=1, gstyle=3)).max() <= TOL
    assert np.abs(other - got).max() > 1e-3  # speaker/style embeddings matter
    no_dur = voc.vocode(hubert, dur_pred=False)
    assert no_dur.size == 40 * BASE.hop
    assert np.abs(no_dur - run_ref(ref, hubert, dur_pred=False)).max() <= TOL


def test_expressive_string_and_resynthesis_units(expressive):
    ref, voc = expressive
    rng = np.random.default_rng(1)
    s = "[St81][Pi13][Hu78][Hu42][Hu81][Pi3][Hu159][Hu316][Hu259][St5][Pi60][Hu7][Hu7][Hu400]"
    u = string_to_units(s)
    got = voc.vocode(s, speaker=1)
    assert np.abs(got - run_ref(ref, u["hubert"], u["pitch"], u["style"], spkr=1)).max() <= TOL
    # undeduplicated units at their own rates (HuBERT 25 Hz, pitch 12.5 Hz, style 1 Hz): the reference
    # turns durations off and upsamples pitch x2, style x25
    hubert = rng.integers(0, 501, 53)
    pitch = rng.integers(0, 64, 27)
    style = rng.integers(0, 100, 3)
    got = voc.vocode({"hubert": " ".join(map(str, hubert)), "pitch": pitch, "style": style})
    want = run_ref(ref, hubert, ref_upsample(pitch, 53, 2), ref_upsample(style, 53, 25), dur_pred=False)
    assert got.size == 53 * EXPRESSIVE.hop and np.abs(got - want).max() <= TOL


def test_batch_equals_single_items(base):
    _, voc = base
    rng = np.random.default_rng(2)
    items = [rng.integers(0, 501, n) for n in (5, 40, 17, 33, 70, 2)]
    speakers = [0, 1, 2, 3, 0, 1]
    batch = voc.vocode_batch(items, speaker=speakers)  # max_batch 4: two padded batches, sorted by length
    for item, spk, audio in zip(items, speakers, batch):
        single = voc.vocode(item, speaker=spk)
        assert audio.shape == single.shape and np.abs(audio - single).max() <= 1e-5


def test_lengths_in_a_bucket_do_not_recompile():
    _, voc = make(BASE, seed=3)
    rng = np.random.default_rng(3)
    voc.vocode(rng.integers(0, 501, 20), dur_pred=False)
    assert voc.num_traces == {"generator": 1}
    for n in (1, 7, 25, 32):  # all in the 32-frame bucket
        voc.vocode(rng.integers(0, 501, n), dur_pred=False)
    assert voc.num_traces == {"generator": 1}
    voc.vocode(rng.integers(0, 501, 40), dur_pred=False)  # 48-frame bucket: one more
    voc.vocode(rng.integers(0, 501, 47), dur_pred=False)
    assert voc.num_traces == {"generator": 2}
    for n in (3, 9, 14):  # with durations: one durations trace, generator buckets of the repeated length
        voc.vocode(rng.integers(0, 501, n))
    assert voc.num_traces["durations"] == 1 and voc.num_traces["generator"] <= 4
    lengths = (1, 32, 33, 48, 49, 64, 65, 97, 1000)
    assert [half_octave_bucket(n, FRAME_BUCKET_MIN) for n in lengths] == [32, 32, 48, 48, 64, 64, 96, 128, 1024]


def test_errors(base, expressive):
    _, voc = base
    with pytest.raises(ValueError, match="HuBERT unit 501 out of range: .* ids 0..500"):
        voc.vocode(np.array([3, 501]))
    with pytest.raises(ValueError, match="out of range"):  # tokens.py rejects [Hu600] itself
        voc.vocode("[Hu3][Hu600]")
    with pytest.raises(ValueError, match="nothing to vocode: the string '' has no HuBERT units"):
        voc.vocode("")
    with pytest.raises(ValueError, match="has no HuBERT units"):
        voc.vocode("[Text]hello[Speech]")
    with pytest.raises(ValueError, match="speaker 4 out of range: this vocoder has 4 speakers"):
        voc.vocode("[Hu3]", speaker=4)
    with pytest.raises(ValueError, match="speaker -1 out of range"):
        voc.vocode("[Hu3]", speaker=-1)
    with pytest.raises(ValueError, match="unknown speaker 'nobody'"):
        voc.vocode("[Hu3]", speaker="nobody")
    with pytest.raises(ValueError, match="style 10 out of range"):
        voc.vocode("[Hu3]", style=10)
    with pytest.raises(ValueError, match="non-empty list"):
        voc.vocode_batch([])
    _, evoc = expressive
    with pytest.raises(ValueError, match="no global styles"):
        evoc.vocode("[St1][Pi2][Hu3]", speaker=0, style=2)
    with pytest.raises(ValueError, match="needs pitch units"):
        evoc.vocode("[Hu3][Hu4]", speaker=0)
    with pytest.raises(ValueError, match="pitch unit 64 out of range"):
        evoc.vocode({"hubert": [1, 2], "pitch": [64, 1], "style": [0, 0]}, speaker=0)
    with pytest.raises(ValueError, match="with dur_pred, style units must be given per HuBERT frame"):
        evoc.vocode({"hubert": [1, 2, 3], "pitch": [1, 1, 2], "style": [0]}, speaker=0, dur_pred=True)
    with pytest.raises(ValueError, match="cannot cover 60 HuBERT frames"):
        evoc.vocode({"hubert": np.ones(60, int), "pitch": [1, 2], "style": [0]}, speaker=0)


def test_write_wav_and_directory_round_trip(tmp_path, base):
    _, voc = base
    audio = voc.vocode("[Hu5][Hu9][Hu11]")
    write_wav(tmp_path / "out.wav", audio)
    back, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == 16000 and back.shape == audio.shape and np.abs(back - audio).max() <= 1 / 2**15
    out = voc.save(tmp_path / "voc")
    loaded = Vocoder.load(out)
    assert loaded.cfg == BASE and loaded.speakers == voc.speakers and loaded.styles == voc.styles
    assert np.array_equal(loaded.vocode("[Hu5][Hu9][Hu11]"), audio)
    (out / "config.yaml").write_text(
        (out / "config.yaml")
        .read_text()
        .replace("embedding_dim: 8", "embedding_dim: 16")
        .replace("encoder_embed_dim: 8", "encoder_embed_dim: 16")
    )
    with pytest.raises(ValueError, match=r"parameter dict/embedding has shape \(501, 8\), expected \(501, 16\)"):
        Vocoder.load(out)
    with pytest.raises(FileExistsError):
        save_component(out, VOCODER_SPEC, voc.params, {"config.yaml": BASE})
    with pytest.raises(FileNotFoundError, match="converted vocoder directory .*nothing does not exist"):
        Vocoder.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a converted vocoder directory"):
        Vocoder.load(tmp_path / "empty")
