"""A run directory on a bucket (`out_dir: s3://…` or `gs://…`): the trainer works in a local copy and
uploads it (docs/beyond_one_machine.md).

Orbax's TensorStore writer here speaks local files and gs:// only (no s3://), and TensorBoard and
the metrics file append, which an object store cannot; so the run directory is staged: at the start
the bucket's copy is downloaded into the local cache (`paths.cache_dir`, the same folder for the
same URL), checkpoints whose upload did not finish are left out (a step directory counts once its
`commit_success.txt`, uploaded last, is there), and after every finished checkpoint save and at the
end (also when training stops on an error) the local copy is uploaded: changed files, each
checkpoint's completion marker last, and the files deleted locally (older checkpoints) deleted
on the bucket. A kill loses at most the steps since the last uploaded checkpoint, as locally.
Single-host only: the other hosts of a multi-host job would write checkpoint shards the upload
of process 0 does not see.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

from spiritlm_jax import paths

_STEP_FILE = re.compile(r"^checkpoints/(\d+)/")
_MARKER = re.compile(r"^checkpoints/\d+/commit_success\.txt$")


def _in_flight(rel: str) -> bool:
    """Orbax's temporary folder of a save in progress."""
    return ".orbax-checkpoint-tmp" in rel


def _incomplete_steps(files: list[str]) -> set[str]:
    steps = {m.group(1) for f in files if (m := _STEP_FILE.match(f))}
    done = {f.split("/")[1] for f in files if _MARKER.match(f)}
    return steps - done


@contextlib.contextmanager
def staged(out_dir: str) -> Iterator[tuple[Path, Optional[Callable[[], None]]]]:
    """(the local run directory, an upload function or None): the run directory itself when local."""
    if not paths.is_remote(out_dir):
        yield Path(out_dir), None
        return
    partial = _incomplete_steps(paths.list_files(out_dir))

    def skip(rel: str) -> bool:
        m = _STEP_FILE.match(rel)
        return _in_flight(rel) or (m is not None and m.group(1) in partial)

    def last(rel: str) -> bool:
        return bool(_MARKER.match(rel))

    with paths.staged_dir(out_dir, skip=skip, last=last) as local:
        yield local, lambda: paths.upload_tree(local, out_dir, delete=True, skip=_in_flight, last=last)
