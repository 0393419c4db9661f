"""What every aligner is: `align(wav_16k, text) -> [[word, start_s, end_s], ...]` in the transcript's
order and spelling (alignment.text), raising `AlignmentError` (one line, for bad_files.jsonl) when
that recording cannot be aligned; optionally `align_batch([(wav, text), ...])` -> words or an
AlignmentError per item; `describe()` -> one line for reports."""

from __future__ import annotations


class AlignmentError(ValueError):
    """This recording + transcript cannot be aligned (the reason is one line)."""


def align_many(aligner, items):
    """words or an AlignmentError for each (wav, text), batched when the aligner can."""
    if hasattr(aligner, "align_batch"):
        return aligner.align_batch(items)
    out = []
    for wav, text in items:
        try:
            out.append(aligner.align(wav, text))
        except AlignmentError as e:
            out.append(e)
    return out


def align_one(aligner, wav, text) -> list:
    """`aligner.align(wav, text)`, its AlignmentError re-raised as "alignment failed: ..."."""
    try:
        return aligner.align(wav, text)
    except AlignmentError as e:
        raise AlignmentError(f"alignment failed: {e}") from None
