"""Local and remote (gs://, s3://) paths through one type: `etils.epath.Path` (docs/beyond_one_machine.md).

    path("s3://bucket/corpus") / "corpus.json"     # an epath.Path; a local string gives a local one

Remote paths go through fsspec (s3fs for s3://, gcsfs for gs://: the `remote` extra; listings
are not cached, so what other processes wrote is seen); epath's
TensorFlow backend is switched off (`EPATH_USE_TF=false`, unless set) because TensorFlow's file
system has no s3:// and is not a dependency. An S3-compatible server is chosen by the standard
`AWS_ENDPOINT_URL` (and credentials by `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).

Pieces that only write local files (ArrayRecord shards, Orbax checkpoints on s3://) write a local
temporary file or folder that is then uploaded; an object store writes each object whole, so a
reader never sees half of one. Pieces that only read local files (a tokenizer or a bundle folder
handed to a loader) read a local copy: `local_dir` downloads a remote folder once into a cache
(`SPIRITLM_CACHE`, default ~/.cache/spiritlm_jax/remote), files compared by size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("EPATH_USE_TF", "false")  # before the first epath call: the choice is cached

import fsspec  # noqa: E402
from etils import epath  # noqa: E402

# Listings are not cached: other processes (Beam workers, the other job of a lock) write the same
# folders, and a stale listing would hide their done markers.
for _protocol in ("s3", "gs", "gcs"):
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)

REMOTE_PREFIXES = ("gs://", "s3://")


def is_remote(p) -> bool:
    return str(p).startswith(REMOTE_PREFIXES)


def path(p) -> epath.Path:
    """The one path type: a local or a gs:// / s3:// path."""
    return epath.Path(p)


def absolute(p) -> str:
    """An absolute path string (remote paths are absolute already)."""
    return str(p) if is_remote(p) else str(Path(p).absolute())


def resolved(p) -> str:
    """A canonical path string, for comparing two paths (symlinks resolved where local)."""
    return str(p) if is_remote(p) else str(Path(p).resolve())


def join(base, rel: str) -> str:
    """`rel` against the folder `base` unless `rel` is absolute or remote itself (a manifest's
    relative audio paths)."""
    if is_remote(rel) or Path(rel).is_absolute():
        return rel
    return str(path(base) / rel)


def write_file(dest, data: bytes | str) -> None:
    """Write a whole file so that a reader sees the old or the new content, never a part: a local
    file through a temporary name and a rename, a remote object in one upload."""
    raw = data.encode() if isinstance(data, str) else data
    if is_remote(dest):
        path(dest).write_bytes(raw)
        return
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def upload(local: Path, dest) -> None:
    """A finished local file to `dest` (one upload: the object appears whole)."""
    with open(local, "rb") as src, path(dest).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)


def list_files(root) -> list[str]:
    """Paths (relative, '/'-separated) of every file under the folder `root`, sorted."""
    root = path(root)
    out: list[str] = []

    def walk(d: epath.Path, prefix: str) -> None:
        for p in d.iterdir():
            if p.is_dir():
                walk(p, f"{prefix}{p.name}/")
            else:
                out.append(prefix + p.name)

    if root.is_dir():
        walk(root, "")
    return sorted(out)


def cache_dir(remote) -> Path:
    base = Path(os.environ.get("SPIRITLM_CACHE", Path.home() / ".cache" / "spiritlm_jax" / "remote"))
    name = hashlib.sha256(str(remote).rstrip("/").encode()).hexdigest()[:16]
    return base / f"{name}-{Path(str(remote).rstrip('/')).name}"


def download_tree(remote, local: Path, mirror: bool = False, skip=None) -> list[str]:
    """Copy every file under `remote` to `local` (files of the same size are kept); returns the
    relative paths copied. `mirror`: also delete local files that are not on `remote`; `skip(rel)`:
    files not to copy (nor keep, with mirror)."""
    copied = []
    files = [rel for rel in list_files(remote) if skip is None or not skip(rel)]
    if mirror and Path(local).is_dir():
        wanted = set(files)
        for p in sorted(q for q in Path(local).rglob("*") if q.is_file()):
            if p.relative_to(local).as_posix() not in wanted:
                p.unlink()
    for rel in files:
        src, dst = path(remote) / rel, local / rel
        if dst.is_file() and dst.stat().st_size == src.stat().length:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.download"
        with src.open("rb") as f, open(tmp, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 22)
        os.replace(tmp, dst)
        copied.append(rel)
    return copied


def upload_tree(local: Path, remote, delete: bool = False, skip=None, last=None) -> list[str]:
    """Copy every file under `local` to `remote` whose remote copy is missing or of another size;
    returns the relative paths copied. `skip(rel)`: files not to copy; `last(rel)`: files copied
    after all others (completion markers); `delete`: then remove the remote files that are not
    under `local` (or are skipped)."""
    have = {rel: (path(remote) / rel).stat().length for rel in list_files(remote)}
    mine = [
        (p.relative_to(local).as_posix(), p)
        for p in sorted(q for q in Path(local).rglob("*") if q.is_file())
        if skip is None or not skip(p.relative_to(local).as_posix())
    ]
    copied = []
    for rel, p in sorted(mine, key=lambda t: bool(last and last(t[0]))):
        if have.get(rel) != p.stat().st_size:
            upload(p, path(remote) / rel)
            copied.append(rel)
    if delete:
        for rel in sorted(set(have) - {rel for rel, _ in mine}):
            (path(remote) / rel).unlink()
    return copied


_SYNCED: dict[str, Path] = {}  # remote -> its cached copy, downloaded once per process


def local_dir(p) -> Path:
    """A local folder with the content of `p`: `p` itself when local, else its cached copy
    (downloaded once per process)."""
    if not is_remote(p):
        return Path(p)
    key = str(p).rstrip("/")
    if key not in _SYNCED:
        if not path(p).is_dir():
            raise FileNotFoundError(f"{p} does not exist (or is not a folder)")
        local = cache_dir(p)
        download_tree(p, local, mirror=True)
        _SYNCED[key] = local
    return _SYNCED[key]


def local_copy(p) -> Path:
    """`local_dir` for a folder; for a remote file, its cached copy."""
    if not is_remote(p) or path(p).is_dir():
        return local_dir(p)
    local = cache_dir(p) / path(p).name
    if not local.is_file() or local.stat().st_size != path(p).stat().length:
        local.parent.mkdir(parents=True, exist_ok=True)
        with path(p).open("rb") as f, open(local.parent / f".{local.name}.download", "wb") as g:
            shutil.copyfileobj(f, g, 1 << 22)
        os.replace(local.parent / f".{local.name}.download", local)
    return local


@contextlib.contextmanager
def staged_dir(p, skip=None, last=None) -> Iterator[Path]:
    """A folder that tools write with local-file APIs (appends, renames): `p` itself when local; for a
    bucket, a local copy (downloaded, mirrored, without the files `skip(rel)` names) that is uploaded
    on exit, also after an error (changed files, `last(rel)` files after the others; files deleted
    locally are deleted on the bucket)."""
    if not is_remote(p):
        yield Path(p)
        return
    local = cache_dir(p)
    download_tree(p, local, mirror=True, skip=skip)
    local.mkdir(parents=True, exist_ok=True)
    try:
        yield local
    finally:
        upload_tree(local, p, delete=True, skip=skip, last=last)


@contextlib.contextmanager
def local_file(p) -> Iterator[Path]:
    """A local path to read the file `p` from (a temporary copy when remote)."""
    if not is_remote(p):
        yield Path(p)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / path(p).name
        with path(p).open("rb") as f, open(tmp, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 22)
        yield tmp
