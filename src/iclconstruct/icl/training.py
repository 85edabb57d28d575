"""Training loop for in-context linear regression (paper App. D; curriculum of Garg et al. 2022).

Loss: mean squared error of the prediction read at each x̃ column against the next ``y``
(paper §4: ``Σ_i (ŷ_i − y_i)²`` over prefixes). Adam, linear warm-up then cosine decay to 0.
Data are synthetic and drawn on the training device, in the training dtype, by a generator
re-seeded from ``(seed, rank, step)`` every step, so a run is reproducible (per device type),
resumes bit-exactly from its checkpoint, and under ``torchrun`` every rank draws its own batches
without a sampler. The loss is read by the host only every ``log_every`` steps (no per-step
sync). Model initialisation is seeded by ``ICLTransformer(..., seed=)`` (the CLI passes
``--seed`` to both). The same code runs on CPU, one GPU or DDP (device-agnostic).
"""
from __future__ import annotations

import csv
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import torch

from ..errors import CheckpointError, DivergenceError, OutOfRangeError
from . import checkpoint as ckpt
from .data import sample_batch
from .model import ICLTransformer

__all__ = ["Curriculum", "PRESETS", "preset", "train", "TrainResult", "lr_at"]


@dataclass(frozen=True)
class Curriculum:
    """Garg et al. (2022) curriculum: every ``interval`` steps the active dimension grows by
    ``d_step`` (from ``d_start``) and the number of points by ``n_step`` (from ``n_start``),
    until they reach the model's ``d`` and the run's ``n_points``."""

    d_start: int
    n_start: int
    interval: int
    d_step: int = 1
    n_step: int = 2

    def at(self, step: int, d: int, n_points: int):
        k = step // self.interval
        return min(d, self.d_start + k * self.d_step), min(n_points, self.n_start + k * self.n_step)


PRESETS = {
    # fits the 2-core CPU budget; "tiny" is for tests and smoke runs
    "tiny": dict(model=dict(d=4, n_layers=2, width=32, n_heads=2, max_points=9),
                 train=dict(steps=2000, batch_size=64, lr=1e-3, curriculum=None)),
    "lite": dict(model=dict(d=8, n_layers=4, width=64, n_heads=2, max_points=17),
                 train=dict(steps=40000, batch_size=64, lr=1e-3,
                            curriculum=dict(d_start=2, n_start=5, interval=1000, d_step=1, n_step=2))),
    # d = 4, deeper rather than wider (paper: >= 8 layers behave like OLS); curriculum d 2→4, n 5→9
    "ols-d4": dict(model=dict(d=4, n_layers=8, width=32, n_heads=2, max_points=9),
                   train=dict(steps=40000, batch_size=64, lr=1e-3,
                              curriculum=dict(d_start=2, n_start=5, interval=500, d_step=1, n_step=2))),
    "probe": dict(model=dict(d=4, n_layers=6, width=64, n_heads=2, max_points=13),
                  train=dict(steps=15000, batch_size=64, lr=1e-3,
                             curriculum=dict(d_start=2, n_start=5, interval=500, d_step=1, n_step=2))),
}


def preset(name: str) -> dict:
    """A copy of the named preset: ``{"model": ICLTransformer kwargs, "train": train kwargs}``."""
    if name not in PRESETS:
        raise OutOfRangeError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[name]
    return {"model": dict(p["model"]), "train": dict(p["train"])}


def lr_at(step: int, steps: int, lr: float, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac·steps`` then cosine decay to 0 (paper App. D)."""
    warm = max(1, int(round(warmup_frac * steps)))
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@dataclass
class TrainResult:
    model: ICLTransformer
    history: List[dict] = field(default_factory=list)
    out_dir: Optional[Path] = None
    step: int = 0
    seconds: float = 0.0


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _batch_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 12_345) % (2**63 - 1)


def train(
    model: ICLTransformer,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    *,
    noise_var: float = 0.0,
    prior_var: float = 1.0,
    n_points: Optional[int] = None,
    curriculum: Union[None, dict, Curriculum] = None,
    out_dir=None,
    seed: int = 0,
    warmup_frac: float = 0.05,
    grad_clip: float = 1.0,
    weight_decay: float = 0.0,
    ckpt_every: int = 1000,
    log_every: int = 50,
    resume: bool = True,
    init_from=None,
    device=None,
    progress: bool = True,
    fixed_w=None,
) -> TrainResult:
    """Train ``model`` on fresh synthetic tasks for ``steps`` Adam steps (paper App. D).

    Args:
        steps, batch_size, lr: schedule length, per-rank batch, peak learning rate.
        noise_var, prior_var: σ² and τ² of the task distribution.
        n_points: examples per training sequence (default ``model.config.max_points``).
        curriculum: ``None``, a :class:`Curriculum`, its kwargs dict, or ``"garg"`` (Garg et al. 2022
            scaled to this run: d from ⌈d/4⌉ and n from 2⌈d/4⌉+1, +1 / +2 every ``steps // 60`` steps).
        out_dir: folder for ``model.safetensors``, ``config.json``, ``optimizer.safetensors``
            and ``log.csv``; an unfinished run there with the same arguments is resumed.
        init_from: checkpoint whose weights start the run (fine-tuning, e.g. noiseless → noisy).
        fixed_w: a length-``d`` weight vector used for every task (the paper's §5 probing control:
            a model trained on one fixed w never needs to compute w in context). Default: w ~ N(0, τ²I).
        device: default CUDA (``LOCAL_RANK``) if available, else CPU. Under an initialised
            ``torch.distributed`` process group the model is wrapped in DDP; each rank draws
            its own batches from seed ``(seed, rank, step)``; only rank 0 writes files.

    Returns a :class:`TrainResult` with the (unwrapped) model and the logged history.
    """
    from ..lang.validate import as_float

    noise_var = as_float(noise_var, "noise_var", nonneg=True)  # before any sampling: sqrt(-1) would be NaN labels
    prior_var = as_float(prior_var, "prior_var", positive=True)
    if not isinstance(steps, int) or steps < 1:
        raise OutOfRangeError(f"steps must be a positive integer; got {steps!r}")
    if batch_size < 1 or lr <= 0:
        raise OutOfRangeError(f"batch_size must be >= 1 and lr > 0; got batch_size={batch_size}, lr={lr}")
    if isinstance(curriculum, str):
        if curriculum != "garg":
            raise OutOfRangeError(f"curriculum must be None, 'garg', a dict or a Curriculum; got {curriculum!r}")
        d0 = max(1, math.ceil(model.config.d / 4))
        n_full = model.config.max_points if n_points is None else int(n_points)
        curriculum = Curriculum(d_start=d0, n_start=min(n_full, 2 * d0 + 1), interval=max(1, steps // 60))
    if isinstance(curriculum, dict):
        curriculum = Curriculum(**curriculum)
    rank, world = _dist()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    cfg = model.config
    n_points = cfg.max_points if n_points is None else int(n_points)
    if not 1 <= n_points <= cfg.max_points:
        raise OutOfRangeError(f"n_points must be in [1, max_points={cfg.max_points}]; got {n_points}")
    train_cfg = dict(steps=steps, batch_size=batch_size, lr=lr, noise_var=float(noise_var), prior_var=float(prior_var),
                     n_points=n_points, curriculum=asdict(curriculum) if curriculum else None, seed=seed,
                     warmup_frac=warmup_frac, grad_clip=grad_clip, weight_decay=weight_decay,
                     init_from=str(init_from) if init_from else None, world_size=world)
    w_fixed = None
    if fixed_w is not None:
        w_fixed = [float(v) for v in fixed_w]
        if len(w_fixed) != cfg.d:
            raise OutOfRangeError(f"fixed_w must have d = {cfg.d} entries; got {len(w_fixed)}")
        train_cfg["fixed_w"] = w_fixed

    if str(device).startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    start, history = 0, []
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and resume and (out / ckpt.CONFIG).is_file():
        doc = ckpt.read_config(out)
        if doc.get("model") != cfg.to_dict() or doc.get("train") != train_cfg:
            raise CheckpointError(
                f"{out} holds a run with different settings (model {doc.get('model')}, train {doc.get('train')}); "
                "use a fresh out_dir or resume=False to overwrite"
            )
        ckpt.load_weights(model, out)
        start = int(doc.get("step", 0))
        opt_step = ckpt.load_optimizer(out, opt) if (out / ckpt.OPTIM).is_file() else -1
        if opt_step not in (start, None):
            warnings.warn(f"{out}: optimizer state is from step {opt_step}, weights from step {start}; "
                          "resuming with fresh Adam moments (the run is no longer bit-exact)")
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        history = _read_log(out)
    elif init_from is not None:
        ckpt.load_weights(model, init_from)

    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.device(device)] if str(device).startswith("cuda") else None)
    is_main = rank == 0
    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="train", dynamic_ncols=True, mininterval=1.0)
    t0 = time.time()
    base_elapsed = history[-1]["seconds"] if history else 0.0
    model.train()
    d = cfg.d
    # the running loss stays on the device: the host reads it only every log_every steps
    loss_sum = torch.zeros((), device=device)
    n_window, last_logged = 0, start
    gen = torch.Generator(device=device)
    w_fixed_t = torch.tensor(w_fixed, device=device) if w_fixed is not None else None
    step = start
    for step in range(start, steps):
        d_act, n_act = curriculum.at(step, d, n_points) if curriculum else (d, n_points)
        gen.manual_seed(_batch_seed(seed, rank, step))
        X, y = sample_batch(batch_size, n_act, d, d_active=d_act, noise_var=noise_var, prior_var=prior_var,
                            generator=gen, device=device, w=w_fixed_t)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, lr, warmup_frac)
        pred = net(_encode_train(X, y))[:, 0::2]
        loss = ((pred - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        loss_sum += loss.detach()
        n_window += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            mean_loss = loss_sum.item() / n_window
            if not math.isfinite(mean_loss):
                raise DivergenceError(f"training loss became {mean_loss} between steps {last_logged} and {done}; "
                                      f"lower lr (now {lr}) or grad_clip (now {grad_clip})")
            rec = dict(step=done, loss=mean_loss, loss_per_d=mean_loss / d_act,
                       lr=opt.param_groups[0]["lr"], d_active=d_act, n_points=n_act,
                       seconds=round(base_elapsed + time.time() - t0, 3))
            history.append(rec)
            loss_sum.zero_()
            n_window, last_logged = 0, done
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.4f}", d=d_act, n=n_act)
            if out is not None and is_main:
                _append_log(out, rec)
        if bar is not None:
            bar.update(1)
        if out is not None and is_main and (done % ckpt_every == 0 or done == steps):
            # optimizer first: config.json (written last) is the commit marker of a checkpoint
            ckpt.save_optimizer(out, opt, step=done)
            ckpt.save_checkpoint(out, model, train_config=train_cfg, step=done)
    if bar is not None:
        bar.close()
    model.eval()
    return TrainResult(model=model, history=history, out_dir=out, step=steps,
                       seconds=(history[-1]["seconds"] if history else time.time() - t0))


def _encode_train(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Tokens x̃_1, ỹ_1, …, x̃_n (the last ỹ is never needed for the loss), the layout of
    :func:`iclconstruct.tokens.encode` (x̃ = [0; x], ỹ = [y; 0]) built in place on the batch's
    device and dtype, without ``encode``'s finiteness check (a host sync): sampled data are finite."""
    B, n, d = X.shape
    tok = X.new_zeros(B, 2 * n, d + 1)
    tok[:, 0::2, 1:] = X
    tok[:, 1::2, 0] = y
    return tok[:, :-1]


_LOG_FIELDS = ["step", "loss", "loss_per_d", "lr", "d_active", "n_points", "seconds"]


def _append_log(out: Path, rec: dict) -> None:
    path = out / "log.csv"
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow(rec)


def _read_log(out: Path) -> List[dict]:
    path = out / "log.csv"
    if not path.is_file():
        return []
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    hist = [{k: (float(v) if k not in ("step", "d_active", "n_points") else int(float(v))) for k, v in r.items()} for r in rows]
    # drop log rows beyond the checkpointed step (written after the last checkpoint)
    doc = ckpt.read_config(out)
    keep = [h for h in hist if h["step"] <= doc.get("step", 0)]
    if len(keep) != len(hist):
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=_LOG_FIELDS)
            w.writeheader()
            w.writerows(keep)
    return keep
