"""What every aligner is: `align(wav_16k, text) -> [[word, start_s, end_s], ...]` in the transcript's
order and spelling (alignment.text), raising `AlignmentError` (one line, for bad_files.jsonl) when
that recording cannot be aligned; optionally `align_batch([(wav, text), ...])` -> words or an
AlignmentError per item; `describe()` -> one line for reports."""

from __future__ import annotations


class AlignmentError(ValueError):
    """This recording + transcript cannot be aligned (the reason is one line)."""


def align_one(aligner, wav, text) -> list:
    """`aligner.align(wav, text)`; any failure (an AlignmentError, or an error of the decoder
    underneath) is raised as one AlignmentError "alignment failed: ...": never fatal for a run."""
    try:
        return aligner.align(wav, text)
    except AlignmentError as e:
        raise AlignmentError(f"alignment failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - a decoder error on one file must not stop the run
        raise AlignmentError(f"alignment failed: {type(e).__name__}: {e}") from None


def align_many(aligner, items) -> list:
    """words or an AlignmentError for each (wav, text): one `align_batch` call when the aligner has
    it; if that call itself fails, item by item, so one bad file cannot take the batch down."""
    if hasattr(aligner, "align_batch"):
        try:
            return aligner.align_batch(items)
        except Exception:  # noqa: BLE001 - isolate the failing item below
            pass
    out = []
    for wav, text in items:
        try:
            out.append(aligner.align(wav, text))
        except AlignmentError as e:
            out.append(e)
        except Exception as e:  # noqa: BLE001
            out.append(AlignmentError(f"{type(e).__name__}: {e}"))
    return out
