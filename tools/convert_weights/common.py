"""Helpers shared by the converter scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from spiritlm_jax import config as _config


def run_cli(work: Callable[[], Path]) -> int:
    """Run a conversion; print where it wrote (exit 0) or the error, naming the tensor/file (exit 2)."""
    try:
        out = work()
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # ConversionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def converter_main(
    schema: type, argv: Optional[Sequence[str]], script: str, doc: str, work: Callable[[object], Path]
) -> int:
    """The `main` of a converter: flags parsed into `schema` by the one config loader
    (`--src X --out Y ...`, `--help` lists every key), then `run_cli(work(args))`."""
    prog = f"python tools/convert_weights/{Path(script).name}"
    return _config.run_cli(schema, argv, prog, lambda args: run_cli(lambda: work(args)), description=doc)


def numpy_dtype(name: str):
    """The numpy dtype for a parameter dtype name (bfloat16 from ml_dtypes, which jax depends on)."""
    if name == "float32":
        return np.dtype(np.float32)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    raise ValueError(f"unsupported parameter dtype {name!r}; choose float32 or bfloat16")


# ----- tensor loading (torch only where a format needs it) ------------------------------------------


def torch_to_numpy(t) -> np.ndarray:
    """A CPU torch tensor as numpy (bf16, which numpy lacks, is widened to fp32)."""
    import torch

    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.detach().cpu().numpy()


def read_json(path: str | Path, what: str = "file") -> dict:
    """A JSON object from a file; a file that is not JSON (or not an object) is a ConversionError
    naming it and the position."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _refused_pickle(path: Path, e: BaseException) -> Optional[ValueError]:
    """torch's weights-only unpickler refusing an object (code could run on load): one line."""
    import pickle

    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
        return ValueError(
            f"{path}: refused to load: the file holds Python objects other than tensors, which could run code "
            f"when unpickled{f' ({detail})' if detail else ''}; only weights-only checkpoints are read"
        )
    return None


def load_torch_file(path: str | Path, weights_only: bool = True) -> dict:
    """torch.load onto the CPU, memory-mapped when the file format allows (zip-based .bin/.pt). A file
    torch cannot read, or whose pickle the weights-only loader refuses, is a ValueError naming it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except Exception as e:  # noqa: BLE001  legacy (non-zip) files cannot be memory-mapped: retry below
        refused = _refused_pickle(path, e)
        if refused is not None:
            raise refused from None
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # truncated / corrupt / not a torch file: name the file
        refused = _refused_pickle(path, e)
        if refused is not None:
            raise refused from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: torch cannot read this file ({type(e).__name__}: {first})") from None


def warn_non_finite(name: str, w: np.ndarray, source: str = "") -> np.ndarray:
    """Print a warning (stderr) when a tensor holds NaN or infinite values; return it unchanged."""
    if w.dtype.kind == "f" or str(w.dtype) == "bfloat16":
        bad = int(np.size(w) - np.count_nonzero(np.isfinite(np.asarray(w, np.float32))))
        if bad:
            where = f"{source}: " if source else ""
            print(f"warning: {where}tensor {name} has {bad} of {np.size(w)} values NaN or infinite", file=sys.stderr)
    return w


class NamedTensors:
    """Lazy name -> numpy access over safetensors / torch files, sharded (with an index json) or not.

        tensors = NamedTensors.open(hf_dir, ("model.safetensors", "pytorch_model.bin"))
        tensors.names; tensors.get("model.norm.weight")

    safetensors are read one tensor at a time; torch shards are memory-mapped and only one is held
    open at a time (visit names shard by shard to avoid re-opening: `names_by_file`).
    """

    def __init__(self, files: dict[str, Path]):
        self.files = files  # tensor name -> file
        self._open: dict[Path, object] = {}

    @property
    def names(self) -> set[str]:
        return set(self.files)

    def names_by_file(self) -> list[str]:
        return sorted(self.files, key=lambda nm: (str(self.files[nm]), nm))

    @classmethod
    def open(cls, directory: str | Path, candidates: tuple[str, ...]) -> "NamedTensors":
        """The first of `candidates` (file names) found in `directory`, or its `<name>.index.json`."""
        directory = Path(directory)
        for single in candidates:
            index = directory / f"{single}.index.json"
            if index.is_file():
                weight_map = read_json(index, "index").get("weight_map")
                if not isinstance(weight_map, dict):
                    raise ConversionError(f"{index} has no 'weight_map' object")
                files = {nm: directory / fn for nm, fn in weight_map.items()}
                missing = sorted({p for p in files.values() if not p.is_file()})
                if missing:
                    raise FileNotFoundError(f"{index} names shard {missing[0].name}, which does not exist")
                return cls(files)
            if (directory / single).is_file():
                return cls({nm: directory / single for nm in cls._keys(directory / single)})
        wanted = ", ".join(f"{c}[.index.json]" for c in candidates)
        raise FileNotFoundError(f"{directory} has none of {wanted}")

    @staticmethod
    def _keys(path: Path) -> list[str]:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="np") as f:
                    return list(f.keys())
            except Exception as e:  # SafetensorError is not a ValueError: name the file
                raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        return list(load_torch_file(path).keys())

    def get(self, name: str) -> np.ndarray:
        """The tensor as numpy; a NaN/inf in it is warned about (stderr), naming the tensor and file."""
        path = self.files[name]
        if path.suffix == ".safetensors":
            if path not in self._open:
                from safetensors import safe_open

                self._open[path] = safe_open(str(path), framework="pt")  # "pt": numpy has no bf16
            return warn_non_finite(name, torch_to_numpy(self._open[path].get_tensor(name)), str(path))
        if path not in self._open:
            self._open = {k: v for k, v in self._open.items() if k.suffix == ".safetensors"}  # one torch shard
            self._open[path] = load_torch_file(path)
        return warn_non_finite(name, torch_to_numpy(self._open[path][name]), str(path))


# ----- checked state-dict access (speech converters) ------------------------------------------------


class ConversionError(ValueError):
    """A checkpoint does not match the expected layout (missing, extra or mis-shaped tensor, bad file)."""


def load_torch_checkpoint(path: str | Path) -> dict:
    """A torch checkpoint (weights-only unpickling, as the reference loads them) as a dict; a file that
    is missing is a FileNotFoundError, one that torch cannot read (or that is not a dict) a ConversionError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        ckpt = load_torch_file(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; name the file instead
        raise ConversionError(f"{path} cannot be read as a PyTorch checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    return ckpt


def fold_weight_norm(g: np.ndarray, v: np.ndarray, dim: int) -> np.ndarray:
    """torch.nn.utils.weight_norm(dim=dim): w = g * v / ||v||, the norm over every axis but `dim`."""
    v = np.asarray(v, np.float32)
    axes = tuple(a for a in range(v.ndim) if a != dim % v.ndim)
    return (
        np.asarray(g, np.float32)
        * v
        / np.sqrt((v.astype(np.float64) ** 2).sum(axis=axes, keepdims=True)).astype(np.float32)
    )


class CheckedTensors:
    """Name -> float32 numpy over a state dict, with every shape checked and every name accounted for.

        t = CheckedTensors(sd, "mhubert_base_25hz.pt")
        w = t.take("post_extract_proj.weight", (768, 512))
        t.check_all_used(ignore_prefixes=("final_proj.",))

    Errors name the source, the tensor and both shapes.
    """

    def __init__(self, sd: dict, source: str, prefix: str = ""):
        self.sd, self.source, self.prefix = sd, source, prefix
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return self.prefix + key in self.sd

    def take(self, key: str, shape) -> np.ndarray:
        key = self.prefix + key
        if key not in self.sd:
            raise ConversionError(f"{self.source}: missing tensor {key} (expected shape {tuple(shape)})")
        w = self.sd[key]
        w = torch_to_numpy(w) if hasattr(w, "detach") else np.asarray(w)
        if tuple(w.shape) != tuple(shape):
            raise ConversionError(f"{self.source}: tensor {key} has shape {tuple(w.shape)}, expected {tuple(shape)}")
        self.used.add(key)
        return warn_non_finite(key, w.astype(np.float32), self.source)

    def check_all_used(self, ignore_prefixes: tuple[str, ...] = ()) -> None:
        extra = sorted(
            k
            for k in self.sd
            if k not in self.used
            and k.startswith(self.prefix)
            and not k[len(self.prefix) :].startswith(ignore_prefixes)
        )
        if extra:
            shape = tuple(getattr(self.sd[extra[0]], "shape", ()))
            listed = ", ".join(extra[1:4]) + (", ..." if len(extra) > 4 else "")
            more = f" (and {len(extra) - 1} more: {listed})" if len(extra) > 1 else ""
            raise ConversionError(f"{self.source}: unexpected tensor {extra[0]} of shape {shape}{more}")
