"""(Topic-)StoryCloze readers: the ROCStories cloze CSV and the spoken release folders (whole stories,
and context + endings) into likelihood Items, their errors, the Topic variant, and scoring in all four
settings with a tiny random LM over real recordings (tests/data)."""

import csv
import shutil
from pathlib import Path

import pytest

from spiritlm_jax.evaluation.likelihood import Encoder, accuracy, score_items
from spiritlm_jax.evaluation.storycloze import (
    load_storycloze,
    read_spoken_storycloze,
    read_storycloze_csv,
    topic_variant,
)
from tests.test_stsp import tiny_lm

DATA = Path(__file__).parent / "data"
HEADER = [
    "InputStoryid",
    "InputSentence1",
    "InputSentence2",
    "InputSentence3",
    "InputSentence4",
    "RandomFifthSentenceQuiz1",
    "RandomFifthSentenceQuiz2",
    "AnswerRightEnding",
]
ROWS = [
    [
        "a1",
        "Tom had an exam.",
        "He studied all night.",
        "He woke up late.",
        "He ran to school.",
        "He passed.",
        "He hated pizza.",
        "1",
    ],
    [
        "b2",
        "Ann bought a dog.",
        "It barked a lot.",
        "She trained it.",
        "It learned fast.",
        "The cat flew away.",
        "Ann was proud.",
        "2",
    ],
    [
        "c3",
        "The agent logged in.",
        "He read the mail.",
        "It was long.",
        "He replied.",
        "He logged out.",
        "The sea was dry.",
        "1",
    ],
]


def write_csv(path, rows=ROWS, header=HEADER):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_reader(tmp_path):
    items = read_storycloze_csv(write_csv(tmp_path / "cloze.csv"))
    assert [it.id for it in items] == ["a1", "b2", "c3"] and [it.label for it in items] == [0, 1, 0]
    assert items[0].context == {"text": "Tom had an exam. He studied all night. He woke up late. He ran to school."}
    assert items[1].candidates == [{"text": "The cat flew away."}, {"text": "Ann was proud."}]
    # the Hugging Face / TFDS copies' column names, with extra columns
    hf = [
        "story_id",
        "input_sentence_1",
        "input_sentence_2",
        "input_sentence_3",
        "input_sentence_4",
        "sentence_quiz1",
        "sentence_quiz2",
        "answer_right_ending",
    ]
    again = read_storycloze_csv(write_csv(tmp_path / "hf.csv", [r + ["x"] for r in ROWS], hf + ["extra"]))
    assert [(it.context, it.candidates, it.label) for it in again] == [
        (it.context, it.candidates, it.label) for it in items
    ]

    bad = tmp_path / "bad.csv"
    with pytest.raises(ValueError, match=r"bad.csv: missing column AnswerRightEnding"):
        read_storycloze_csv(write_csv(bad, [r[:-1] for r in ROWS], HEADER[:-1]))
    with pytest.raises(ValueError, match=r"bad.csv:3: AnswerRightEnding must be 1 or 2, got '3'"):
        read_storycloze_csv(write_csv(bad, [ROWS[0], ROWS[1][:-1] + ["3"]]))
    with pytest.raises(ValueError, match=r"bad.csv:2: empty field\(s\) \['InputSentence2'\]"):
        read_storycloze_csv(write_csv(bad, [ROWS[0][:2] + [""] + ROWS[0][3:]]))
    with pytest.raises(ValueError, match=r"bad.csv:3: story id 'a1' appears twice"):
        read_storycloze_csv(write_csv(bad, [ROWS[0], ROWS[0]]))
    with pytest.raises(FileNotFoundError):
        read_storycloze_csv(tmp_path / "none.csv")


WAVS = sorted(DATA.glob("*.wav"))


def spoken(folder: Path, stories: dict) -> Path:
    """stories: {n: {role: (wav, transcript or None)}} -> <folder>/<n>_<role>.wav (+ .txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, roles in stories.items():
        for role, (wav, text) in roles.items():
            shutil.copy(wav, folder / f"{n}_{role}.wav")
            if text is not None:
                (folder / f"{n}_{role}.txt").write_text(text + "\n")
    return folder


def test_spoken_reader_whole_stories_and_context_layout(tmp_path):
    whole = spoken(
        tmp_path / "sSC",
        {
            0: {"correct": (WAVS[0], "agent logged in"), "incorrect": (WAVS[1], "please enter your password")},
            1: {"correct": (WAVS[2], "please leave a message"), "incorrect": (WAVS[0], None)},
        },
    )
    items = read_spoken_storycloze(whole)
    assert [it.id for it in items] == ["0", "1"] and all(it.context is None for it in items)
    # the correct one's position alternates with the story number
    assert items[0].label == 0 and items[0].candidates[0] == {
        "audio": str(whole / "0_correct.wav"),
        "text": "agent logged in",
    }
    assert items[1].label == 1 and items[1].candidates == [
        {"audio": str(whole / "1_incorrect.wav")},
        {"audio": str(whole / "1_correct.wav"), "text": "please leave a message"},
    ]
    ctx = spoken(
        tmp_path / "split",
        {
            3: {
                "context": (WAVS[1], "please enter"),
                "correct": (WAVS[0], "logged in"),
                "incorrect": (WAVS[2], "the tone"),
            },
        },
    )
    (it,) = read_spoken_storycloze(ctx)
    assert it.context == {"audio": str(ctx / "3_context.wav"), "text": "please enter"} and it.label == 1
    assert it.candidates[1]["text"] == "logged in"

    with pytest.raises(ValueError, match=r"holds no .wav files; it has sub-folders with audio: \['sSC', 'split'\]"):
        read_spoken_storycloze(tmp_path)
    bad = spoken(tmp_path / "bad1", {0: {"correct": (WAVS[0], None)}})
    with pytest.raises(ValueError, match=r"story 0 has no incorrect file \(0_incorrect.wav\)"):
        read_spoken_storycloze(bad)
    shutil.copy(WAVS[0], bad / "notes.wav")
    with pytest.raises(ValueError, match=r"notes.wav: cannot tell the story number and role"):
        read_spoken_storycloze(bad)
    mixed = spoken(
        tmp_path / "mixed",
        {
            0: {"context": (WAVS[0], None), "correct": (WAVS[1], None), "incorrect": (WAVS[2], None)},
            1: {"correct": (WAVS[1], None), "incorrect": (WAVS[2], None)},
        },
    )
    with pytest.raises(ValueError, match=r"1 of 2 stories have a context file but stories \[1\] do not"):
        read_spoken_storycloze(mixed)
    dup = spoken(
        tmp_path / "dup", {0: {"correct": (WAVS[0], None), "incorrect": (WAVS[1], None), "pos": (WAVS[2], None)}}
    )
    with pytest.raises(ValueError, match="story 0 has two right files"):
        read_spoken_storycloze(dup)
    empty = spoken(tmp_path / "empty", {0: {"correct": (WAVS[0], ""), "incorrect": (WAVS[1], None)}})
    with pytest.raises(ValueError, match="0_correct.txt: the transcript is empty"):
        read_spoken_storycloze(empty)


def test_topic_variant(tmp_path):
    items = read_storycloze_csv(write_csv(tmp_path / "c.csv"))
    topic = topic_variant(items, seed=1)
    rights = {it.id: it.candidates[it.label] for it in items}
    for it, t in zip(items, topic):
        assert (t.id, t.context, t.label) == (it.id, it.context, it.label)
        assert t.candidates[t.label] == it.candidates[it.label]  # the right ending stays
        wrong = t.candidates[1 - t.label]
        assert wrong != it.candidates[1 - it.label] and wrong in rights.values() and wrong != rights[it.id]
    assert [t.candidates for t in topic_variant(items, seed=1)] == [t.candidates for t in topic]
    assert load_storycloze(csv_path=str(tmp_path / "c.csv"), topic=True, seed=1)[2].candidates == topic[2].candidates
    whole = spoken(
        tmp_path / "w",
        {
            0: {"correct": (WAVS[0], None), "incorrect": (WAVS[1], None)},
            1: {"correct": (WAVS[1], None), "incorrect": (WAVS[2], None)},
        },
    )
    with pytest.raises(ValueError, match="have no context .* use the tStoryCloze release folder"):
        load_storycloze(folder=str(whole), topic=True)
    with pytest.raises(ValueError, match="exactly one"):
        load_storycloze()


def test_scoring_in_all_four_settings(tmp_path):
    lm = tiny_lm()
    folder = spoken(
        tmp_path / "split",
        {
            0: {
                "context": (WAVS[1], "please enter"),
                "correct": (WAVS[0], "agent logged in"),
                "incorrect": (WAVS[2], "the tone"),
            },
            1: {
                "context": (WAVS[0], "agent logged in"),
                "correct": (WAVS[1], "your password"),
                "incorrect": (WAVS[2], None),
            },
        },
    )
    items = read_spoken_storycloze(folder)
    enc = Encoder(lm.tokenizer, lm.speech_tokenizer)
    for setting in ("T", "S", "T2S", "S2T"):
        res = score_items(lm.model, lm.params, items, enc, setting, batch_size=4)
        r = accuracy(res, items, n_boot=50)
        ok = 1 if setting in ("T", "S2T") else 2  # story 1's incorrect ending has no transcript
        assert (r["n"], r["bad"]) == (ok, 2 - ok), setting
        sums, lens = res["0"]
        text_lens = [len(enc.tokens(c, "text")) - 1 for c in items[0].candidates]
        audio_lens = [len(enc.tokens(c, "audio")) - 1 for c in items[0].candidates]
        continued = [len(enc.continuation(items[0].context, c)) for c in items[0].candidates]  # T: one text
        assert lens == {"T": continued, "S2T": text_lens}.get(setting, audio_lens)
