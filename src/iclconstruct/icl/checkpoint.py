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
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..files import atomic_write_bytes as _atomic_write_bytes
from ..files import read_tensors
from ..files import save_tensors as _save_tensors
from .model import ICLTransformer, ModelConfig

__all__ = ["FORMAT", "save_checkpoint", "load", "load_weights", "read_config", "save_optimizer", "load_optimizer"]

FORMAT = "iclconstruct.icl/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIM = "optimizer.safetensors"


def _digest(tensors: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_tensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist; pass a folder written by icl.train or a .safetensors file")
    return read_tensors(path)


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
    stored = meta.get("sha256")
    if not (isinstance(stored, str) and len(stored) == 64):
        raise CheckpointError(f"{wpath} has no SHA-256 of its tensors in its metadata, so edited or corrupted "
                              f"weights could not be detected; save the checkpoint again with icl.save_checkpoint")
    if _digest(tensors) != stored:
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
    _check_shapes_before_allocating(cfg, wpath)
    model = ICLTransformer.from_config(cfg)
    load_weights(model, wpath)
    return model.to(device).eval()


def _check_shapes_before_allocating(cfg: ModelConfig, wpath: Path) -> None:
    """Build the architecture on the ``meta`` device (no memory) and compare its tensor
    shapes with the file's header, so a crafted config cannot allocate more than the file holds."""
    from ..filecheck import read_safetensors_header

    header = read_safetensors_header(wpath)
    try:
        with torch.device("meta"):
            probe = ICLTransformer.from_config(cfg)
    except Exception:  # an architecture the meta device cannot build: the full load still checks every shape
        return
    want = {k: list(v.shape) for k, v in probe.state_dict().items()}
    got = {k: v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if want != got:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:3]
        raise CheckpointError(f"{wpath}: the model config in its metadata does not describe its tensors "
                              f"(first differences: {[(k, want.get(k), got.get(k)) for k in bad]}); the file is "
                              f"corrupted or was edited")


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
