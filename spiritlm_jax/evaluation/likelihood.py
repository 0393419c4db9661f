"""Likelihood-pair benchmarks (sWUGGY, sBLIMP, (Topic-)StoryCloze) in the paper's settings.

An item has an optional context and 2+ candidates, one of them correct. Each content may carry a
text form, an audio form, or both; the setting picks which:
    T: text -> text     S: speech -> speech     T2S: text context, speech candidates     S2T: speech -> text
Items are scored by the summed log-likelihood of each candidate's tokens given BOS (+ the tokenizer's
lead ids, as every training document starts) + the context
(+ the candidate's modality marker when the modality switches, T2S/S2T, or there is no context; in T
and S the candidate continues the context's span without a second marker; in T its ids are those the
context and candidate get as one text, as in a training document); accuracy is reported with
and without the paper's length normalisation (mean per-token log-likelihood), with a bootstrap 95% interval.

Manifest (JSONL, one item per line; unknown fields are errors):
    {"id": "...", "context": {"text": "...", "audio": "a.wav"} | null,
     "candidates": [{"text": "...", "audio": "..."}, ...], "label": 0}
Audio paths are relative to the manifest's folder unless absolute.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.data.sources import iter_jsonl
from spiritlm_jax.evaluation.scoring import score
from spiritlm_jax.tokens import Modality, Segment, build_prompt

SETTINGS = {"T": ("text", "text"), "S": ("audio", "audio"), "T2S": ("text", "audio"), "S2T": ("audio", "text")}
ITEM_FIELDS = {"id", "context", "candidates", "label"}
CONTENT_FIELDS = {"text", "audio"}


@dataclasses.dataclass
class Item:
    id: str
    context: Optional[dict]
    candidates: list[dict]
    label: int


def _check_content(c, where: str, base: Path) -> dict:
    if not isinstance(c, dict) or not c or set(c) - CONTENT_FIELDS:
        raise ValueError(f"{where}: expected an object with 'text' and/or 'audio', got {c!r}")
    c = dict(c)
    if "audio" in c and not Path(c["audio"]).is_absolute():
        c["audio"] = str(base / c["audio"])
    return c


def load_items(path: str | Path) -> list[Item]:
    """Read and validate a manifest; errors name the line and the field."""
    path = Path(path)
    items = []
    for where, raw in iter_jsonl(path, "manifest"):
        n = int(where.rsplit(":", 1)[1])
        unknown = set(raw) - ITEM_FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(ITEM_FIELDS)}")
        cands = raw.get("candidates")
        if not isinstance(cands, list) or len(cands) < 2:
            raise ValueError(f"{where}: 'candidates' must list at least two contents")
        label = raw.get("label")
        if not isinstance(label, int) or not 0 <= label < len(cands):
            raise ValueError(f"{where}: 'label' must index a candidate, got {label!r}")
        ctx = raw.get("context")
        items.append(
            Item(
                str(raw.get("id", n)),
                None if ctx is None else _check_content(ctx, f"{where} context", path.parent),
                [_check_content(c, f"{where} candidate {i}", path.parent) for i, c in enumerate(cands)],
                label,
            )
        )
    if not items:
        raise ValueError(f"manifest {path} has no items")
    return items


def read_zerospeech_gold(folder: str | Path, audio_ext: str = ".wav") -> list[Item]:
    """ZeroSpeech 2021 lexical (sWUGGY) / syntactic (sBLIMP) dev/test folder: `gold.csv` with columns
    filename, id, correct (1 = the real word / grammatical sentence) and, when present, the text
    (`word` for lexical, `transcription` for syntactic); audio at <folder>/<filename>.wav. Rows that
    share an id form one item."""
    folder = Path(folder)
    gold = folder / "gold.csv"
    if not gold.is_file():
        raise FileNotFoundError(f"{gold} does not exist")
    groups: dict[str, list[dict]] = {}
    with gold.open() as f:
        for row in csv.DictReader(f):
            missing = {"filename", "id", "correct"} - set(row)
            if missing:
                raise ValueError(f"{gold}: missing column(s) {sorted(missing)}")
            groups.setdefault(row["id"], []).append(row)
    items = []
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda r: -int(r["correct"]))  # the correct one first
        cands = []
        for r in rows:
            c = {"audio": str(folder / (r["filename"] + audio_ext))}
            text = r.get("word") or r.get("transcription")
            if text:
                c["text"] = text
            cands.append(c)
        if len(cands) >= 2 and int(rows[0]["correct"]) == 1:
            items.append(Item(key, None, cands, 0))
    return items


class Encoder:
    """Turns contents into token ids (marker first, no BOS) with the model's tokenizer and speech
    tokenizer, through the one prompt builder (cached)."""

    def __init__(self, tokenizer, speech_tokenizer=None):
        self.tok, self.speech, self._cache = tokenizer, speech_tokenizer, {}

    @staticmethod
    def _form(content: dict, form: str):
        if form not in content:
            raise ValueError(f"content has no {form!r} form (has {sorted(content)})")
        return content[form]

    def tokens(self, content: dict, form: str) -> list[int]:
        """The content's marker and ids, without what a sequence starting with a marker begins with after
        BOS (the tokenizer's `lead_ids`, e.g. SentencePiece's '▁'): that belongs to the sequence's start."""
        key = (form, self._form(content, form))
        if key not in self._cache:
            if form == "text":
                seg = Segment(Modality.TEXT, content["text"])
            else:
                if self.speech is None:
                    raise ValueError("speech settings need a speech tokenizer")
                units = self.speech.encode_string(content["audio"])
                if not units:
                    raise ValueError(f"{content['audio']}: no speech units")
                seg = Segment(Modality.SPEECH, units)
            ids, lead = build_prompt(self.tok, [seg], bos=False).ids, self.tok.lead_ids
            if ids[: len(lead)] != lead or not self.tok.layout.is_marker_id(ids[len(lead)]):
                raise ValueError(f"{form} content does not encode as lead ids + a modality marker")
            self._cache[key] = ids[len(lead) :]
        return self._cache[key]

    def continuation(self, context: dict, candidate: dict) -> list[int]:
        """Ids of a text candidate that continues the context's text span: the ids the two texts get as
        one text (context, a space, candidate), after the context's ids. This is what a training document
        of the whole story holds ('▁' before the candidate's first word), not the candidate encoded on its
        own after a [Text] marker (no '▁': a join like 'kitchen.Then' that text documents never contain)."""
        ctx, cand = self._form(context, "text"), self._form(candidate, "text")
        sep = "" if ctx[-1:].isspace() or cand[:1].isspace() else " "
        head = self.tokens(context, "text")
        whole = self.tokens({"text": ctx + sep + cand}, "text")
        if whole[: len(head)] != head or len(whole) == len(head):
            raise ValueError(f"candidate {cand[:40]!r} does not continue the context's tokens as one text")
        return whole[len(head) :]


def score_items(model, params, items: Sequence[Item], encoder: Encoder, setting: str, batch_size: int = 16):
    """Per item: (log-likelihood sums per candidate, token counts) or an error string for bad items."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {sorted(SETTINGS)}")
    ctx_form, cand_form = SETTINGS[setting]
    # a training document starts BOS, lead ids, marker: so does every scored sequence
    start = ([encoder.tok.bos_id] if encoder.tok.bos_id is not None else []) + encoder.tok.lead_ids
    prompts, conts, owners, results = [], [], [], {}
    for it in items:
        try:
            prefix = start + (encoder.tokens(it.context, ctx_form) if it.context is not None else [])
            same_span = it.context is not None and ctx_form == cand_form
            if same_span and cand_form == "text":
                # the candidate continues the context's text: scored as one text would be tokenized
                pairs = [(prefix, encoder.continuation(it.context, c)) for c in it.candidates]
            else:
                # Only the candidate's content is scored (never a marker). Its modality marker is part of
                # the prompt when the modality switches (or there is no context); a speech candidate
                # continues a speech context's span with no marker, as training data has markers only at
                # switches.
                cand_ids = [encoder.tokens(c, cand_form) for c in it.candidates]
                pairs = [(prefix if same_span else prefix + c[:1], c[1:] if len(c) > 1 else c) for c in cand_ids]
        except (ValueError, FileNotFoundError) as e:
            results[it.id] = f"{type(e).__name__}: {e}"
            continue
        for prompt, cont in pairs:
            prompts.append(prompt)
            conts.append(cont)
            owners.append(it.id)
    if prompts:
        sums, lens = score(model, params, prompts, conts, batch_size)
        for i, owner in enumerate(owners):
            s, n = results.setdefault(owner, ([], []))
            s.append(float(sums[i]))
            n.append(int(lens[i]))
    return results


def accuracy(results: dict, items: Sequence[Item], n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy (raw and length-normalised) with bootstrap 95% intervals; bad items are counted."""
    raw, norm, bad = [], [], []
    for it in items:
        r = results.get(it.id)
        if r is None or isinstance(r, str):
            bad.append({"id": it.id, "error": r or "not scored"})
            continue
        sums, lens = np.asarray(r[0]), np.asarray(r[1])
        raw.append(int(np.argmax(sums) == it.label))
        norm.append(int(np.argmax(sums / np.maximum(lens, 1)) == it.label))
    out = {"n": len(raw), "bad": len(bad), "bad_items": bad[:20]}
    rng = np.random.default_rng(seed)
    for name, hits in (("accuracy", raw), ("accuracy_normalized", norm)):
        hits = np.asarray(hits, np.float64)
        if len(hits) == 0:
            out[name] = None
            continue
        boot = hits[rng.integers(0, len(hits), (n_boot, len(hits)))].mean(1)
        out[name] = float(hits.mean())
        out[name + "_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return out
