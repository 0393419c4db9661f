"""The alignment layer's pure parts: transcript normalisation (numbers, punctuation, original spelling
kept), letter-to-sound for dictionary gaps, pause snapping, audio-folder layouts."""

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from spiritlm_jax.alignment.manifest import scan_audio_dir
from spiritlm_jax.alignment.sphinx import letter_to_sound, snap_to_pauses, trim_bounds
from spiritlm_jax.alignment.text import number_words, ordinal_words, spoken_tokens, transcript_words


@pytest.mark.parametrize(
    "word, tokens",
    [
        ("Hello,", ["hello"]),
        ("don’t", ["don't"]),
        ("42", ["forty", "two"]),
        ("1990", ["nineteen", "ninety"]),
        ("2005", ["two", "thousand", "five"]),
        ("1900", ["nineteen", "hundred"]),
        ("1905", ["nineteen", "oh", "five"]),
        ("3.5", ["three", "point", "five"]),
        ("9,9", ["nine", "nine"]),
        ("1,000", ["one", "thousand"]),
        ("21st", ["twenty", "first"]),
        ("12th", ["twelfth"]),
        ("$5", ["five", "dollars"]),
        ("100%", ["one", "hundred", "percent"]),
        ("R&D", ["r", "and", "d"]),
        ("well-known", ["well", "known"]),
        ("007", ["zero", "zero", "seven"]),
        ("...", []),
        ("Émile", ["émile"]),
    ],
)
def test_spoken_tokens(word, tokens):
    assert spoken_tokens(word) == tokens


def test_number_words():
    assert number_words(0) == ["zero"]
    assert number_words(115) == ["one", "hundred", "fifteen"]
    assert number_words(1_200_034) == ["one", "million", "two", "hundred", "thousand", "thirty", "four"]
    assert ordinal_words(20) == ["twentieth"] and ordinal_words(3) == ["third"]


def test_transcript_words_keep_spelling_and_glue_punctuation():
    ws = transcript_words("-- Hello , world!  It's 9 -")
    assert [w.text for w in ws] == ["-- Hello ,", "world!", "It's", "9 -"]
    assert [w.tokens for w in ws] == [("hello",), ("world",), ("it's",), ("nine",)]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab9 ,.-'%&$\u00e9 \n")), max_size=40))
def test_words_join_back_to_the_transcript(text):
    ws = transcript_words(text)
    if ws:
        assert " ".join(w.text for w in ws) == " ".join(text.split())
    assert all(w.tokens for w in ws)


def test_letter_to_sound():
    assert letter_to_sound("zorbly") == "Z AO R B L IY"
    assert letter_to_sound("shake") == "SH AE K"
    assert letter_to_sound("'") is None


def test_snap_to_pauses_moves_boundaries_to_nearby_pauses_only():
    silent = np.ones(150, bool)
    silent[20:40] = False  # sound 0.20-0.40 s
    silent[45:120] = False  # sound 0.45-1.20 s (a 50 ms pause between)
    words = [["a", 0.15, 0.43], ["b", 0.43, 1.35]]
    assert snap_to_pauses(words, silent) == [["a", 0.2, 0.4], ["b", 0.45, 1.2]]
    far = [["a", 0.71, 0.74], ["b", 0.74, 0.77]]  # inside continuous sound: no pause within reach
    assert snap_to_pauses(far, silent) == [["a", 0.71, 0.74], ["b", 0.74, 0.77]]
    near = [["a", 0.55, 0.6], ["b", 0.6, 0.7]]  # a starts 100 ms after a pause; b is inside sound
    assert snap_to_pauses(near, silent) == [["a", 0.45, 0.6], ["b", 0.6, 0.7]]


def test_trim_bounds():
    wav = np.zeros(16000, np.float32)
    wav[8000:9600] = 0.5
    assert trim_bounds(wav) == (8000 - 2400, 9600 + 2400)


def test_audio_folder_layouts(tmp_path):
    wav = np.zeros(1600, np.float32)
    (tmp_path / "mine").mkdir()
    sf.write(tmp_path / "mine" / "a.wav", wav, 16000)
    (tmp_path / "mine" / "a.txt").write_text("Hello\nthere. ")
    sf.write(tmp_path / "mine" / "b.flac", wav, 16000)  # no transcript
    ls = tmp_path / "LibriSpeech" / "dev" / "84" / "121"
    ls.mkdir(parents=True)
    sf.write(ls / "84-121-0000.flac", wav, 16000)
    (ls / "84-121.trans.txt").write_text("84-121-0000 GO DO YOU HEAR\n84-121-0001 MISSING AUDIO\n")
    entries, bad = scan_audio_dir(tmp_path)
    assert [(e["id"], e.get("text")) for e in entries] == [
        ("LibriSpeech/dev/84/121/84-121-0000", "GO DO YOU HEAR"),
        ("mine/a", "Hello there."),
        ("mine/b", None),
    ]
    assert len(bad) == 1 and "84-121-0001" in bad[0]["path"] and bad[0]["entry"].endswith(":2")
    with pytest.raises(FileNotFoundError):
        scan_audio_dir(tmp_path / "nope")
