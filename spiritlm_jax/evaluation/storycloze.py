"""StoryCloze and Topic-StoryCloze readers: the public releases -> likelihood.Item lists, so that
score_items / accuracy / `python -m spiritlm_jax.evaluate likelihood` work on them unchanged.

Text release (ROCStories cloze test CSV, e.g. cloze_test_test__spring2016.csv): columns
    InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1, RandomFifthSentenceQuiz2, AnswerRightEnding
(the lower-case names of the Hugging Face / TFDS copies, story_id, input_sentence_1..4,
sentence_quiz1/2, answer_right_ending, are read too; other columns are ignored). One item per row:
context = the four sentences joined by spaces, candidates = the two endings, label = AnswerRightEnding - 1.

Spoken release (sStoryCloze / tStoryCloze of Hassid et al. 2023, one folder per benchmark, e.g.
`sSC/`): files `<n>_<role>.wav`, with an optional transcript `<n>_<role>.txt` next to each, where n is
the story number and the role is `correct` / `incorrect` (also accepted: positive/pos, negative/neg).
In that release each wav is the whole story spoken (context + ending), so an item has no context and
two full-story candidates: settings S (and T, from the transcripts). When a folder also holds
`<n>_context.wav` (role context/prompt/prefix; then correct/incorrect are the endings alone), items get a
context and all four settings (T, S, T2S, S2T) apply.

Topic-StoryCloze as text: `topic_variant(items)` replaces each wrong ending with the right ending of
another story (a seeded derangement), which is how tStoryCloze was built from StoryCloze.

In spoken items the correct ending's position alternates with the story number (even n: first), so a
tie between the two scores can never count as a hit for every item.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Optional

import numpy as np

from spiritlm_jax.evaluation.likelihood import Item

CSV_COLUMNS = {  # canonical name -> accepted spellings
    "id": ("InputStoryid", "story_id"),
    "s1": ("InputSentence1", "input_sentence_1"),
    "s2": ("InputSentence2", "input_sentence_2"),
    "s3": ("InputSentence3", "input_sentence_3"),
    "s4": ("InputSentence4", "input_sentence_4"),
    "e1": ("RandomFifthSentenceQuiz1", "sentence_quiz1"),
    "e2": ("RandomFifthSentenceQuiz2", "sentence_quiz2"),
    "answer": ("AnswerRightEnding", "answer_right_ending"),
}
ROLES = {
    "correct": "right",
    "positive": "right",
    "pos": "right",
    "incorrect": "wrong",
    "negative": "wrong",
    "neg": "wrong",
    "context": "context",
    "prompt": "context",
    "prefix": "context",
}
_NAME = re.compile(r"^(\d+)[_-](.+)$")


def read_storycloze_csv(path: str | Path) -> list[Item]:
    """Text StoryCloze items; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StoryCloze CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cols = {}
        for key, names in CSV_COLUMNS.items():
            found = [n for n in names if n in header]
            if not found:
                raise ValueError(
                    f"{path}: missing column {names[0]} (the header has {header}); expected the "
                    "ROCStories cloze test columns InputStoryid, InputSentence1..4, "
                    "RandomFifthSentenceQuiz1/2, AnswerRightEnding"
                )
            cols[key] = found[0]
        items, seen = [], set()
        for row in reader:
            where = f"{path}:{reader.line_num}"
            vals = {k: (row.get(c) or "").strip() for k, c in cols.items()}
            empty = [cols[k] for k, v in vals.items() if not v]
            if empty:
                raise ValueError(f"{where}: empty field(s) {empty}")
            if vals["answer"] not in ("1", "2"):
                raise ValueError(f"{where}: {cols['answer']} must be 1 or 2, got {vals['answer']!r}")
            if vals["id"] in seen:
                raise ValueError(f"{where}: story id {vals['id']!r} appears twice")
            seen.add(vals["id"])
            context = " ".join(vals[k] for k in ("s1", "s2", "s3", "s4"))
            items.append(
                Item(
                    vals["id"], {"text": context}, [{"text": vals["e1"]}, {"text": vals["e2"]}], int(vals["answer"]) - 1
                )
            )
    if not items:
        raise ValueError(f"StoryCloze CSV {path} has no rows")
    return items


def _role(path: Path) -> tuple[int, str]:
    m = _NAME.match(path.stem)
    role = None
    if m:
        words = re.split(r"[_\-.]", m.group(2).lower())
        found = {ROLES[w] for w in words if w in ROLES}
        role = found.pop() if len(found) == 1 else None
    if role is None:
        raise ValueError(
            f"{path}: cannot tell the story number and role from the name; expected "
            "<n>_correct, <n>_incorrect or <n>_context (with the story number n)"
        )
    return int(m.group(1)), role


def read_spoken_storycloze(folder: str | Path, audio_ext: str = ".wav") -> list[Item]:
    """Spoken (Topic-)StoryCloze items from one release folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"spoken StoryCloze folder {folder} does not exist")
    audio = sorted(p for p in folder.iterdir() if p.suffix.lower() == audio_ext and p.is_file())
    if not audio:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*" + audio_ext)))
        hint = f"; it has sub-folders with audio: {subs} (pass one of them)" if subs else ""
        raise ValueError(f"{folder} holds no {audio_ext} files{hint}")
    stories: dict[int, dict[str, dict]] = {}
    for p in audio:
        n, role = _role(p)
        content = {"audio": str(p)}
        txt = p.with_suffix(".txt")
        if txt.is_file():
            text = txt.read_text(encoding="utf-8").strip()
            if not text:
                raise ValueError(f"{txt}: the transcript is empty")
            content["text"] = text
        story = stories.setdefault(n, {})
        if role in story:
            raise ValueError(f"{p}: story {n} has two {role} files ({story[role]['audio']} and {p})")
        story[role] = content
    with_context = sum("context" in s for s in stories.values())
    if 0 < with_context < len(stories):
        lacking = sorted(n for n, s in stories.items() if "context" not in s)[:5]
        raise ValueError(
            f"{folder}: {with_context} of {len(stories)} stories have a context file but stories "
            f"{lacking} do not; a release folder is either whole stories or context + endings"
        )
    items = []
    for n in sorted(stories):
        s = stories[n]
        missing = [r for r, name in (("right", "correct"), ("wrong", "incorrect")) if r not in s]
        if missing:
            names = ["correct" if r == "right" else "incorrect" for r in missing]
            raise ValueError(f"{folder}: story {n} has no {' / '.join(names)} file ({n}_{names[0]}{audio_ext})")
        cands = [s["right"], s["wrong"]] if n % 2 == 0 else [s["wrong"], s["right"]]
        items.append(Item(str(n), s.get("context"), cands, 0 if n % 2 == 0 else 1))
    return items


def topic_variant(items: list[Item], seed: int = 0) -> list[Item]:
    """Topic-StoryCloze from StoryCloze items: each wrong ending becomes the right ending of another
    story (a seeded permutation without fixed points)."""
    if len(items) < 2:
        raise ValueError("Topic-StoryCloze needs at least two stories to swap endings between")
    whole = [it.id for it in items if it.context is None]
    if whole:
        raise ValueError(
            f"items {whole[:5]} have no context (whole spoken stories): their Topic variant cannot be "
            "built by swapping endings; use the tStoryCloze release folder instead"
        )
    rng = np.random.default_rng(seed)
    n = len(items)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            break
    out = []
    for it, j in zip(items, perm):
        donor = items[int(j)]
        cands = list(it.candidates)
        wrong = 1 - it.label if len(cands) == 2 else None
        if wrong is None:
            raise ValueError(f"item {it.id}: Topic-StoryCloze needs exactly two candidates")
        cands[wrong] = donor.candidates[donor.label]
        out.append(Item(it.id, it.context, cands, it.label))
    return out


def load_storycloze(
    csv_path: Optional[str] = None, folder: Optional[str] = None, topic: bool = False, seed: int = 0
) -> list[Item]:
    """The CLI's entry: a text CSV or a spoken folder, optionally turned into its Topic variant."""
    if (csv_path is None) == (folder is None):
        raise ValueError("give exactly one of a StoryCloze CSV and a spoken StoryCloze folder")
    items = read_storycloze_csv(csv_path) if csv_path is not None else read_spoken_storycloze(folder)
    return topic_variant(items, seed) if topic else items
