"""Checkpoints of trained learners: safetensors weights + a JSON config, never pickle.

A checkpoint is a folder::

    model.safetensors      weights; header metadata holds the format tag, the model config
                           and a SHA-256 of the tensor bytes (detects silent corruption)
    config.json            human-readable: format, model config, training arguments, step
    optimizer.safetensors  (training folders only) Adam moments, for bit-exact resume

:func:`load` accepts the folder or the ``.safetensors`` file. Anything unreadable, corrupted
(hash mismatch, truncated file) or mismatched (tensor names/shapes not those of the config,
unknown format) raises :class:`~iclconstruct.errors.CheckpointError` naming the file and
what is wrong. ``torch.load`` is never used.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..errors import CheckpointError
from .model import ICLTransformer, ModelConfig

__all__ = ["FORMAT", "save_checkpoint", "load", "load_weights", "read_config", "save_optimizer", "load_optimizer"]

FORMAT = "iclconstruct.icl/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIM = "optimizer.safetensors"


def _st():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - dependency declared in extras
        raise CheckpointError("checkpoints need the 'safetensors' package: pip install 'iclconstruct[icl]'") from exc
    return st


def _digest(tensors: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}


def _serialize(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    """The safetensors format written byte-for-byte deterministically: tensors in name order,
    JSON header with sorted keys (``safetensors.torch.save`` orders the metadata by hash, so two
    identical checkpoints could differ in their bytes), header padded to 8 bytes."""
    header: Dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _ST_DTYPES:
            raise CheckpointError(f"tensor {name!r} has dtype {t.dtype}, which checkpoints cannot store")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def _save_tensors(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    _atomic_write_bytes(path, _serialize(tensors, metadata))


def _read_tensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    st = _st()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist; pass a folder written by icl.train or a .safetensors file")
    try:
        raw = path.read_bytes()
        tensors = st.load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types on truncation/garbage
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupted or truncated?): {exc}") from None
    return tensors, dict(header.get("__metadata__", {}) or {})


def save_checkpoint(out_dir, model: ICLTransformer, *, train_config: Optional[dict] = None, step: int = 0,
                    extra: Optional[dict] = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir`` (atomically); returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    sd = {k: v for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    digest = _digest(sd)
    _save_tensors(out / WEIGHTS, sd, {"format": FORMAT, "model": json.dumps(cfg), "sha256": digest})
    doc = {"format": FORMAT, "model": cfg, "train": train_config or {}, "step": int(step), "sha256": digest}
    if extra:
        doc.update(extra)
    _atomic_write_bytes(out / CONFIG, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return out


def _weights_path(path) -> Path:
    p = Path(path)
    return p / WEIGHTS if p.is_dir() else p


def read_config(path) -> dict:
    """The JSON config of a checkpoint folder (or of the folder holding a ``.safetensors`` file)."""
    p = Path(path)
    cfg_path = p / CONFIG if p.is_dir() else p.with_name(CONFIG)
    if not cfg_path.is_file():
        raise CheckpointError(f"no {CONFIG} next to checkpoint {p}")
    try:
        doc = json.loads(cfg_path.read_text())
    except Exception as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {exc}") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} has format {doc.get('format')!r}; expected {FORMAT!r}")
    return doc


def load_weights(model: ICLTransformer, path) -> ICLTransformer:
    """Load checkpoint weights into an existing model; architecture must match exactly."""
    wpath = _weights_path(path)
    tensors, meta = _read_tensors(wpath)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{wpath} has format {meta.get('format')!r}; expected {FORMAT!r} (not an iclconstruct learner?)")
    if meta.get("sha256") and _digest(tensors) != meta["sha256"]:
        raise CheckpointError(f"{wpath} is corrupted: tensor bytes do not match the stored SHA-256")
    model = getattr(model, "module", model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{wpath} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in expected.items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            raise CheckpointError(
                f"{wpath}: tensor {k!r} has shape {tuple(tensors[k].shape)} but the model expects {tuple(v.shape)} "
                "(checkpoint from a different architecture)"
            )
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(tensors[k].to(v.dtype))
    return model


def load(path, device="cpu") -> ICLTransformer:
    """Load a trained :class:`ICLTransformer` from a checkpoint folder or ``.safetensors`` file (eval mode).

    Raises :class:`CheckpointError` when the file is missing, corrupted, of another format, or
    its tensors do not match the architecture stated in its own metadata.
    """
    wpath = _weights_path(path)
    _, meta = _read_tensors(wpath)
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{wpath} lacks iclconstruct metadata (format {meta.get('format')!r}); expected {FORMAT!r}")
    try:
        cfg = ModelConfig(**json.loads(meta["model"]))
    except Exception as exc:
        raise CheckpointError(f"{wpath}: model config in metadata is invalid: {exc}") from None
    model = ICLTransformer.from_config(cfg)
    load_weights(model, wpath)
    return model.to(device).eval()


# ---------------------------------------------------------------------- optimizer state
def save_optimizer(out_dir, optimizer: torch.optim.Optimizer, step: Optional[int] = None) -> None:
    """Adam state as safetensors (tensors) + JSON (hyper-parameters, step) in the metadata."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            tensors[f"{idx}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    meta = {"format": FORMAT + "/optimizer", "param_groups": json.dumps(sd["param_groups"])}
    if step is not None:
        meta["step"] = str(int(step))
    _save_tensors(Path(out_dir) / OPTIM, tensors, meta)


def load_optimizer(out_dir, optimizer: torch.optim.Optimizer) -> Optional[int]:
    """Restore Adam state; returns the step it was saved at (None for files without one)."""
    path = Path(out_dir) / OPTIM
    tensors, meta = _read_tensors(path)
    if meta.get("format") != FORMAT + "/optimizer":
        raise CheckpointError(f"{path} is not an iclconstruct optimizer state")
    state: Dict[int, dict] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    try:
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    except Exception as exc:
        raise CheckpointError(f"{path} does not match the optimizer: {exc}") from None
    return int(meta["step"]) if "step" in meta else None
