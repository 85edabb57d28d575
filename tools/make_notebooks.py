"""Write the example notebooks in examples/ (without outputs).

    python tools/make_notebooks.py          # regenerate examples/0*.ipynb

The notebooks are committed without outputs; tests/test_notebooks.py executes each one.
Edit the cells here, not in the .ipynb files.
"""
from __future__ import annotations

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

SETUP = """\
import numpy as np
import torch
import iclconstruct as ic
from iclconstruct import viz

torch.set_num_threads(1)      # tiny models: one thread is fastest and plays well with others
rng = np.random.default_rng(0)"""

LEARNER = '''\
import pathlib, tempfile
from iclconstruct.errors import CheckpointError


def get_learner():
    """The shipped learner if the package has one, else a tiny d = 2 learner trained here (~30 s, cached)."""
    shipped = ic.icl.list_pretrained()
    if shipped:
        name = "lite-d8" if "lite-d8" in shipped else shipped[0]
        return ic.icl.pretrained(name), f"shipped {name}"
    out = pathlib.Path(tempfile.gettempdir()) / "iclconstruct-notebook-learner-d2"
    torch.manual_seed(0)
    model = ic.icl.ICLTransformer(d=2, n_layers=2, width=32, n_heads=2, max_points=7)
    kw = dict(steps=2500, batch_size=64, lr=3e-3, out_dir=out, progress=False, log_every=500)
    try:
        res = ic.icl.train(model, **kw)
    except CheckpointError:          # a stale cache from other settings: start over
        res = ic.icl.train(model, resume=False, **kw)
    return res.model, "tiny d=2, 2500 steps (trained here)"


learner, learner_name = get_learner()
learner.name = learner_name
d = learner.config.d
print(learner_name, learner.config)'''

NB01 = [
    new_markdown_cell("""\
# 01 · One gradient-descent step per example, and what it looks like inside

Theorem 1 of Akyürek et al. (ICLR 2023): a transformer can run one step of gradient descent on
the squared loss per in-context example. `ic.circuits.sgd` builds that transformer — real
softmax attention, GeLU MLPs and LayerNorm (the paper's Eq. 4) with hand-set weights — from a
program over *named slots* of the residual stream. This notebook opens it up: the program, the
layers it was packed into (Lemma 7), the slot layout, the residual stream of one forward pass,
and the weight vector `w` as it is updated, layer by layer."""),
    new_code_cell(SETUP),
    new_markdown_cell("""\
## Build it
`lr` uses the paper's convention `w ← w − 2·lr·(x xᵀw − y x)`. The program is a weight-tied
loop body that runs once per example, so the parameter count does not grow with the context."""),
    new_code_cell("""\
d, lr = 3, 0.05
m = ic.circuits.sgd(d, lr)
print(m.program.listing())
print()
print(m.summary())"""),
    new_markdown_cell("""\
## The layout
Rows are the residual stream's hidden units, grouped by slot; columns are the attention (`a`)
and MLP (`m`) sublayers of each distinct layer. A slot is tinted while it is live; `■` marks the
rows a sublayer writes, `○` the rows it reads."""),
    new_code_cell("viz.layout(m)"),
    new_markdown_cell("With `T=` the same picture shows the layers actually run on `T` tokens (the loop body unrolled):"),
    new_code_cell("viz.layout(m, T=7)"),
    new_markdown_cell("""\
## One forward pass
Three examples and a query, in the paper's token layout `x̃_1, ỹ_1, …, x̃_3, ỹ_3, x̃_q`. The model
returns a prediction at every x̃ column: column `2i` predicts with the first `i` examples."""),
    new_code_cell("""\
n = 3
X = rng.uniform(-1, 1, (1, n, d))
w_true = rng.standard_normal(d)
y = X @ w_true
xq = rng.uniform(-1, 1, (1, d))
tokens = ic.tokens.encode(X, y, xq)
out, cache = m.run_with_cache(tokens)
print("predictions after 0, 1, 2, 3 examples:", out[0].round(6))
ref = [xk @ ic.reference.sgd(X[0, :k], y[0, :k], lr) for k, xk in enumerate(list(X[0]) + [xq[0]])]
print("reference one-pass SGD:              ", np.round(ref, 6))
assert np.allclose(out[0], ref, atol=1e-6)"""),
    new_code_cell("viz.residual(m, tokens, layer=[0, 2, -1])"),
    new_code_cell("viz.attention(m, tokens, layer=1)"),
    new_markdown_cell("""\
## `w`, layer by layer
`cache.slot("w", layer)` reads the slot `w` from the residual stream after any layer. The ỹ
column of example `k` holds the SGD iterate after `k` examples once its update has run: the
updates move through the columns as a wavefront, one example per loop iteration (2 layers)."""),
    new_code_cell("""\
labels = viz.token_labels(tokens.shape[1])
for layer in range(cache.n_layers):
    w_cols = cache.slot("w", layer)[0, 1::2].numpy()           # w at the ỹ columns
    print(f"after layer {layer:2d}:", "  ".join(f"{labels[2*k+1]}: {np.round(w, 4)}" for k, w in enumerate(w_cols)))
print()
for k in range(1, n + 1):
    print(f"reference after {k} example(s):", np.round(ic.reference.sgd(X[0, :k], y[0, :k], lr), 4))"""),
    new_markdown_cell("""\
## The weights themselves
Each weight matrix, with slot names on its residual axes. `OV` (`W_V W_O`) shows what a head
copies from which slot to which: the loop body's `mov w(t−2) → wprev` is the diagonal block."""),
    new_code_cell("viz.weights(m, layer=2, which=\"OV\")"),
    new_code_cell("viz.weights(m, layer=2, which=\"W_in\")"),
]

NB02 = [
    new_markdown_cell("""\
# 02 · Ridge regression by Sherman–Morrison, and what its precision costs

Theorem 2: one weight-tied block of 3 layers per example keeps `A⁻¹ = (XᵀX + λI)⁻¹` up to date by
Sherman–Morrison rank-one updates, so the readout at every x̃ column is the ridge prediction for
that prefix. Every numeric trick of the construction trades a large constant for accuracy:

| constant | trick | error it buys |
|---|---|---|
| `product_scale` `N` | GeLU product (Lemma 4) | truncation `∝ 1/N²`, round-off `∝ ε·N` |
| `ln_anchor` `K` | LayerNorm bypass (Lemma 6) | relative `‖h‖²/(4K²)`, round-off `∝ ε·K` |
| `div_scale` `M` | division by LayerNorm (Lemma 8) | relative `‖h‖²/(4M²c²)`, round-off `∝ ε·M` |

Here we sweep each one and measure the error against the numpy solver."""),
    new_code_cell(SETUP),
    new_code_cell("""\
d, lam, n, B = 4, 0.5, 8, 32
X = rng.standard_normal((B, n, d))
y = np.einsum("bnd,bd->bn", X, rng.standard_normal((B, d)))
xq = rng.standard_normal((B, d))
tokens = ic.tokens.encode(X, y, xq)

# reference: ridge prediction at every prefix (x̃ column 2k predicts x_{k+1} from k examples)
queries = np.concatenate([X, xq[:, None]], axis=1)
ref = np.stack([np.einsum("bd,bd->b", queries[:, k], ic.reference.ridge(X[:, :k], y[:, :k], lam))
                for k in range(n + 1)], axis=1)

m = ic.circuits.ridge(d, lam)
print(m.summary().split("  slots:")[0])
err = np.abs(m(tokens) - ref).max()
print(f"default constants: max |circuit − numpy| over all prefixes = {err:.2e}")
print("error budget:", {k: f"{v:.1e}" for k, v in m.error_budget().items()})"""),
    new_markdown_cell("""\
## Sweeping the constants
One constant at a time, the others at their float64 defaults. Range checks are switched off
(`check=False`) so that constants too small to keep the intermediate values in range still
produce a number to plot instead of an `OutOfRangeError`. Constants whose own error formula
already exceeds the model's stated accuracy (1e-6 in float64) are refused by `compile` with an
`ICLConstructError`: those points are missing from the curves."""),
    new_code_cell("""\
def max_error(**overrides):
    try:
        model = ic.circuits.ridge(d, lam, constants=ic.Constants(**overrides), max_len=2 * n + 1)
    except ic.errors.ICLConstructError:  # constants whose own error exceeds the stated 1e-6 are refused
        return np.nan
    with np.errstate(all="ignore"):
        out = model(tokens, check=False)
    e = np.abs(out - ref).max()
    return e if np.isfinite(e) else np.nan

sweeps = {
    "product_scale": np.logspace(2, 7, 11),
    "ln_anchor": np.logspace(4, 11, 15),
    "div_scale": np.logspace(4, 11, 15),
}
errors = {name: [max_error(**{name: float(v)}) for v in values] for name, values in sweeps.items()}
defaults = ic.Constants()
for name, values in sweeps.items():
    best = values[int(np.nanargmin(errors[name]))]
    print(f"{name:14s} default {getattr(defaults, name):.0e}   best in sweep {best:.1e}   "
          f"min error {np.nanmin(errors[name]):.1e}")"""),
    new_code_cell("""\
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
for ax, (name, values) in zip(axes, sweeps.items()):
    ax.loglog(values, errors[name], "o-")
    ax.axvline(getattr(defaults, name), color="grey", ls=":", label="default")
    ax.set_xlabel(name)
    ax.set_ylabel("max |circuit − ridge|")
    ax.legend()
fig.suptitle(f"ridge circuit (d={d}, λ={lam}, n={n}): error vs approximation constants, float64")
plt.show()"""),
    new_markdown_cell("""\
Each curve has the predicted V shape: on the left the approximation error (`∝ 1/N²`,
`∝ 1/K²`, `∝ 1/M²`) dominates, on the right float64 round-off (`∝ ε·N`, `ε·K`, `ε·M`).

## float32
`Constants.float32()` holds constants tuned for single precision (round-off dominates sooner,
so every scale is smaller); the error is then ~1e-3 relative instead of ~1e-9."""),
    new_code_cell("""\
m32 = ic.circuits.ridge(d, lam, dtype=torch.float32, max_len=2 * n + 1)
print("float32 constants:", m32.constants)
# check=False: A⁻¹ starts exactly at its declared bound 1/λ, and float32 round-off overshoots it
out32 = m32(tokens, check=False)
print("max |circuit − ridge| over all prefixes =", np.abs(out32 - ref).max())
print("relative to the predictions' size:       ", np.abs(out32 - ref).max() / np.abs(ref).max())"""),
]

NB03 = [
    new_markdown_cell("""\
# 03 · Compose your own circuit from `mov`, `mul`, `div`, `aff`, and verify it

The library's circuits are ordinary programs over the four primitives of the paper (Lemma 1).
Here we write a new learning algorithm that the paper does not build — **normalised LMS**, a
step-size-safe cousin of SGD:

    w ← w + lr · x (y − wᵀx) / (1 + ‖x‖²)

per example, in order. It needs all four primitives: `mov` (attention: fetch the previous
state), `mul` (GeLU products), `div` (division by LayerNorm, Lemma 8) and `aff`."""),
    new_code_cell(SETUP),
    new_markdown_cell("""\
## The program
Slots are named runs of residual rows with a magnitude **bound**: the approximation constants
give their stated error only inside it, and the compiled model raises if a value leaves it.
The loop body is weight-tied and runs once per example; each ỹ column updates the state it
reads from two columns back (the previous example's ỹ column)."""),
    new_code_cell("""\
def nlms_program(d, lr, x_bound=3.0, y_bound=12.0, w_bound=20.0):
    e_bound = y_bound + np.sqrt(d) * w_bound * x_bound
    p = ic.Program(d, x_bound=x_bound, y_bound=y_bound, name=f"nlms(d={d}, lr={lr})")
    p.slot("xe", d, bound=x_bound)                      # the example's x, at its ỹ column
    p.slot("w", d, bound=w_bound)
    p.slot("wprev", d, bound=w_bound)
    p.slot("e", 1, bound=e_bound)                       # y − wᵀx
    p.slot("c", 1, bound=1 + d * x_bound ** 2)          # 1 + ‖x‖² ≥ 1: a safe divisor
    p.slot("g", d, bound=lr * x_bound * e_bound)        # lr · x · e
    p.slot("pred", 1, bound=np.sqrt(d) * w_bound * x_bound)
    p.mov("x", "xe", offset=1)                          # attention: x of the column before
    p.mul("xe", "is_y", "xe", shape=(d, 1, 1))          # keep it only at ỹ columns
    p.aff("w", bias=np.zeros(d))                        # w₀ = 0
    with p.loop("examples"):
        p.mov("w", "wprev", offset=2)                   # the previous example's state
        p.mul("wprev", "xe", "e", shape=(1, d, 1), coef=-1.0, plus={"y": 1.0})
        p.mul("xe", "xe", "c", shape=(1, d, 1), bias=1.0)
        p.mul("xe", "e", "g", shape=(d, 1, 1), coef=lr)
        p.aff("w", {"wprev": 1.0})
        p.div("g", "c", "w", accumulate=True)           # w += g / |c|  (LayerNorm, Lemma 8)
    p.mov("w", "wprev", offset=1)                       # x̃ columns predict with the state before them
    p.mul("wprev", "x", "pred", shape=(1, d, 1))
    p.readout("pred")
    return p

d, lr = 3, 0.5
prog = nlms_program(d, lr)
print(prog.listing())
model = ic.compile(prog, max_len=64)
print()
print(model.summary().split("  slots:")[0])"""),
    new_code_cell("viz.layout(model)"),
    new_markdown_cell("## Against a numpy reference"),
    new_code_cell("""\
def nlms_reference(X, y, lr):
    w = np.zeros(X.shape[-1])
    for x, t in zip(X, y):
        w = w + lr * x * (t - w @ x) / (1 + x @ x)
    return w

n = 8
X = rng.uniform(-1, 1, (4, n, d))
y = np.einsum("bnd,bd->bn", X, rng.uniform(-1, 1, (4, d)))
xq = rng.uniform(-1, 1, (4, d))
pred = model.predict(X, y, xq)
ref = np.array([q @ nlms_reference(Xb, yb, lr) for Xb, yb, q in zip(X, y, xq)])
print("circuit:", pred.round(6))
print("numpy:  ", ref.round(6))
assert np.allclose(pred, ref, atol=1e-6)"""),
    new_markdown_cell("""\
## Verify it the way the library verifies itself
`iclconstruct.testing` has hypothesis strategies for tokens within a program's bounds, and
`assert_matches_interpreter` replays the compiled schedule in the exact float64 interpreter and
compares **every slot after every sublayer**; a mismatch names the layer, row, column and ops."""),
    new_code_cell("""\
from hypothesis import given, settings
from iclconstruct.testing import assert_matches_interpreter, tokens_for


@settings(max_examples=25, deadline=None)
@given(tokens_for(prog, max_n=5, max_batch=2))
def test_nlms_matches_interpreter(tokens):
    assert_matches_interpreter(model, tokens)

test_nlms_matches_interpreter()
print("25 random token sets: every slot after every sublayer within 1e-6 of the interpreter")"""),
    new_markdown_cell("""\
## Mistakes are caught where they are made
Programs check themselves as they are written, with messages that say what to change:"""),
    new_code_cell("""\
from iclconstruct.errors import ICLConstructError

bad = ic.Program(2)
bad.slot("a", 2)
for attempt in (lambda: bad.mov("x", "a", offset=-1),          # reads the future
                lambda: bad.mul("a", "x", "a"),                 # reads a slot nobody wrote
                lambda: bad.mov("y", "a")):                     # sizes differ
    try:
        attempt()
    except ICLConstructError as exc:
        print(f"{type(exc).__name__}: {exc}")"""),
    new_markdown_cell("## Save it, load it back (bit-exact)"),
    new_code_cell("""\
import tempfile
from iclconstruct import io

with tempfile.TemporaryDirectory() as folder:
    io.save(model, folder)
    again = io.load(folder)        # rebuilds the program, recompiles, checks the weights bit for bit
tokens = ic.tokens.encode(X, y, xq)
assert np.array_equal(again(tokens), model(tokens))
print("reloaded:", again.program)"""),
]

NB04 = [
    new_markdown_cell("""\
# 04 · A trained in-context learner vs OLS, ridge, GD — and vs the constructed circuits

Section 4 of the paper compares a transformer *trained* on in-context linear regression with
classical predictors, using **SPD** (squared prediction difference) and **ILWD** (implicit linear
weight difference), both ÷ d. The constructed circuits are predictors too, so they can be put in
the same table: they agree with their algorithm to ~1e-9, which a trained learner does not.

The notebook uses the learner shipped with the package if there is one; otherwise it trains a
tiny one for ~30 s (a weak learner: the paper's models train for 500k steps)."""),
    new_code_cell(SETUP),
    new_code_cell(LEARNER),
    new_markdown_cell("""\
## Predictors
The paper's set, plus the two circuits. `CircuitLearner` gives a circuit the `predict_prefixes`
interface: one forward pass over `x̃_1, ỹ_1, …, x̃_n, ỹ_n` reads the prediction for every prefix
at the x̃ columns."""),
    new_code_cell("""\
class CircuitLearner:
    def __init__(self, model, name):
        self.model, self.name = model, name

    def predict(self, X, y, x_query):
        return self.model.predict(X, y, x_query)

    def predict_prefixes(self, X, y):
        return self.model(ic.tokens.encode(X, y))     # column 2k: prediction from k examples


n_points = learner.config.max_points
tasks = ic.icl.sample_tasks(128 if d <= 4 else 48, n_points, d, seed=1)
lr = 0.01
circuits = [CircuitLearner(ic.circuits.ridge(d, 0.5), "ridge circuit (λ=0.5)"),
            CircuitLearner(ic.circuits.sgd(d, lr), f"SGD circuit (lr={lr})")]
P = ic.icl.predictors
predictors = [P.ols(), P.ridge(0.1), P.ridge(0.5), P.gd(0.02), P.sgd(lr), P.knn(3), P.averaging()] + circuits
table = ic.icl.compare(learner, tasks, predictors, n_boot=200)
print(table.to_markdown())"""),
    new_markdown_cell("## Which algorithm is the learner closest to? (Fig. 1)"),
    new_code_cell("""\
from IPython.display import Image, display
from iclconstruct.icl import plots

tmp = pathlib.Path(tempfile.mkdtemp())
display(Image(filename=str(plots.plot_spd_curves(table, tmp / "spd.png"))))
display(Image(filename=str(plots.plot_error_curves(table, tmp / "err.png"))))"""),
    new_markdown_cell("""\
## The circuits *are* their algorithms
The same comparison with a circuit in the learner's seat: SPD to its own algorithm is at the
level of float64 round-off, at every prefix."""),
    new_code_cell("""\
for circ, alg in [(circuits[0], P.ridge(0.5)), (circuits[1], P.sgd(lr))]:
    t = ic.icl.compare(circ, tasks, [alg, P.ols()], n_boot=50)
    print(f"{circ.name:24s}", {p: f"{v:.1e}" for p, v in t.summary()})"""),
    new_markdown_cell("""\
## Implicit linear weights (ILWD)
Fit `ŵ` to the learner's predictions on fresh queries after a fixed context (`implicit_weights`)
and compare it with each algorithm's `w`."""),
    new_code_cell("""\
prefixes = [1, d, 2 * d]
ilwd_tasks = ic.icl.sample_tasks(48, 2 * d + 1, d, seed=2)
for p in [P.ols(), P.ridge(0.5), P.gd(0.02), circuits[0]]:
    vals = ic.icl.ilwd(learner, p, ilwd_tasks, n_probe=2 * d, prefixes=prefixes)
    print(f"ILWD/d learner vs {p.name:24s}", "  ".join(f"k={k}: {v:.3f}" for k, v in zip(prefixes, vals)))"""),
]

NB05 = [
    new_markdown_cell("""\
# 05 · Probing a trained learner and a circuit

Section 5 of the paper asks whether intermediate quantities of the algorithms — the moment
`XᵀY` and the weight vector `w_OLS` — can be *decoded* from a trained model's hidden states,
layer by layer (Fig. 4–5). The same probes run on a constructed circuit, where we know the
answer: its slot `w` holds the ridge weights exactly."""),
    new_code_cell(SETUP),
    new_code_cell(LEARNER),
    new_markdown_cell("""\
## The trained learner
`model_hidden_states` returns the residual stream after the embedding and after each block;
`probe_layers` fits, per layer, the closed-form readout (ridge from the last column's hidden
state) and the paper's position-attention probe (learned weights over columns, linear map).
Errors are held-out relative MSE: 0 = decodable, ≈1 = no better than the mean."""),
    new_code_cell("""\
n = d + 2
tasks = ic.icl.sample_tasks(512, n, d, seed=3)
H = ic.icl.model_hidden_states(learner, tasks.X, tasks.y)
targets = {k: ic.icl.probe_target(tasks.X, tasks.y, k) for k in ("xty", "w_ols")}
results = ic.icl.probe_layers(H, targets, methods=("readout", "linear"), steps=150)
for r in results:
    print(f"layer {r.layer}  {r.target:6s} {r.method:8s} held-out rel. error {r.test_rel_err:.3f}")"""),
    new_code_cell("""\
from IPython.display import Image, display
from iclconstruct.icl import plots

tmp = pathlib.Path(tempfile.mkdtemp())
display(Image(filename=str(plots.plot_probes(results, tmp / "probes.png", title=f"probes: {learner_name}"))))"""),
    new_markdown_cell("""\
## The ridge circuit
Its residual stream after every layer is a list of `(B, T, D)` tensors, exactly what the probes
take. First the ground truth: at the ỹ column of the last example, slot `w` after the last layer
*is* the ridge solution."""),
    new_code_cell("""\
lam = 0.5
circuit = ic.circuits.ridge(d, lam)
tokens = ic.tokens.encode(tasks.X, tasks.y)
_, cache = circuit.run_with_cache(tokens, names_filter=lambda name: name.endswith("resid_post") or name == "blocks.0.hook_resid_pre")
w_slot = cache.slot("w", -1)[:, 2 * n - 1].numpy()
w_ridge = ic.reference.ridge(tasks.X, tasks.y, lam)
print("max |slot w − ridge weights| =", np.abs(w_slot - w_ridge).max())"""),
    new_code_cell("""\
H_c = [cache.resid(0, "pre")] + [cache.resid(l) for l in range(cache.n_layers)]
res_c = ic.icl.probe_layers(H_c, {"w_ridge": w_ridge}, methods=("readout",), column=2 * n - 1)
errs = [r.test_rel_err for r in res_c]
print("readout probe error per layer (0 = embedding):", np.round(errs, 4))
first = next(i for i, e in enumerate(errs) if e < 1e-4)
print(f"w is linearly decodable (error < 1e-4) from layer {first} on; the circuit runs {cache.n_layers} layers")"""),
    new_markdown_cell("""\
The error falls gradually — earlier layers hold the weights of shorter prefixes, which correlate
with the final ones — and reaches ~0 (the probe's own regularisation) once the last example's
Sherman–Morrison update has run: the wavefront of updates reaches the last ỹ column only in the
final loop iteration. The layout of the layers run on these tokens:"""),
    new_code_cell("viz.layout(circuit, T=2 * n)"),
]

NB06 = [
    new_markdown_cell("""\
# 06 · Write your own learning algorithm

`@ic.algorithm` turns numpy-like Python over the in-context examples into a transformer: you
write the algorithm, the front end picks the slots, the magnitude bounds (interval analysis),
the ops and their packing into layers (docs/frontend.md). Here we build one that is **not**
in the zoo — full-batch gradient descent with heavy-ball momentum — and verify it three ways:
against a hand-written numpy loop, in the exact interpreter, and as a compiled model."""),
    new_code_cell(SETUP),
    new_markdown_cell("""\
Heavy ball: `v ← β·v − η·(S w − b)`, `w ← w + v`, with `S = XᵀX` and `b = Xᵀy` read as exact
prefix sums (`ctx.sum`). Python's `for` unrolls; each step is a matrix–vector product, one
MLP, so the depth does not depend on the number of examples. The iterates need a bound the
analysis cannot prove (it would grow with every step): `ctx.bound` states it, and the
compiled model checks it at run time."""),
    new_code_cell("""\
d, eta, beta, steps = 3, 0.01, 0.5, 3

@ic.algorithm(d=d, x_bound=4.0, y_bound=10.0, max_n=32)
def heavy_ball(ctx):
    S = ctx.sum(ctx.x.outer(ctx.x))
    b = ctx.sum(ctx.y * ctx.x)
    w, v = ctx.zeros(d), ctx.zeros(d)
    for _ in range(steps):
        v = ctx.bound(beta * v - eta * (S @ w - b), 10.0)
        w = ctx.bound(w + v, 10.0)
    return w

print(heavy_ball.program().listing())"""),
    new_code_cell("""\
def heavy_ball_numpy(X, y):
    w, v = np.zeros(d), np.zeros(d)
    for _ in range(steps):
        v = beta * v - eta * (X.T @ X @ w - X.T @ y)
        w = w + v
    return w

# anisotropic, shifted inputs — not N(0, I)
n = 20
X = np.clip(rng.standard_normal((n, d)) * [1.5, 0.5, 1.0] + [0.5, -0.3, 0.0], -4, 4)
y = np.clip(X @ rng.standard_normal(d), -10, 10)
xq = rng.uniform(-2, 2, d)
tokens = ic.tokens.encode(X, y, xq)
want = np.array([heavy_ball_numpy(X[:k], y[:k]) @ (xq if k == n else X[k]) for k in range(n + 1)])
got = heavy_ball.interpret(tokens)[0]
print("interpreter vs numpy, every prefix:", np.abs(got - want).max())"""),
    new_code_cell("""\
from iclconstruct.testing import assert_matches_interpreter

model = heavy_ball.compile()
print(model)
assert_matches_interpreter(model, tokens)          # every sublayer, every column
out = model(tokens)[0]
print("model vs numpy, every prefix:", np.max(np.abs(out - want) / (1 + np.abs(want))))
print("depth for 8 and 256 examples:", model.depth(8), model.depth(256))"""),
    new_markdown_cell("""\
## Mistakes get named

The front end refuses algorithms a causal transformer cannot run, and says where. A
per-example term may not read an aggregate over *all* examples (example *i* would read
examples after it):"""),
    new_code_cell("""\
@ic.algorithm(d=d)
def peeks(ctx):
    w = ctx.sum(ctx.y * ctx.x)
    return ctx.sum(ctx.x * (ctx.x @ w))

try:
    peeks.program()
except ic.errors.CausalityError as e:
    print(e)"""),
    new_markdown_cell("""\
Try your own: Nesterov momentum, a few Newton steps on `S + λI` (ridge), GD on
`ctx.mean` instead of `ctx.sum` (the 1/n convention), or an SGD-style loop with
`for x, y in ctx.examples():`. `ic.testing.frontend_algorithms()` generates random
algorithms like these for property tests."""),
]

NB07 = [
    new_markdown_cell("""\
# 07 · Activation patching on a circuit whose algorithm is known

A constructed circuit is a ground truth for interpretability methods: we know which rows of the
residual stream hold which quantity, so we know what a patch *must* do. Here the ridge circuit
(Theorem 2, Sherman–Morrison updates) is compiled with the GPT-2-style block
(`block="pre_ln"`), exported to TransformerLens when it is installed
(`pip install 'iclconstruct[tl]'`), and patched: the `w` slot at the readout layer is replaced by
the `w` of another task's run. The readout layer computes `x_qᵀw`, so the prediction must move to
`x_qᵀw_B` — task B's ridge prediction — up to the error of that one product."""),
    new_code_cell(SETUP + """
import importlib.util

d, n, lam = 3, 6, 0.5
def task():
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d)

(XA, yA), (XB, yB) = task(), task()
xq = rng.standard_normal(d)
model = ic.circuits.ridge(d, lam, block="pre_ln")
tokA, tokB = ic.tokens.encode(XA, yA, xq), ic.tokens.encode(XB, yB, xq)
T = tokA.shape[1]
L = len(model.unrolled(T)) - 1          # the readout layer: mov(w[t-1] -> wq), mul(wq·x -> pred)
print(model.summary().split("slots")[0])"""),
    new_markdown_cell("""\
The program names the rows: `w` lives in `model.layout.rows("w")`. At the input of layer `L` the
last ỹ column (position `T − 2`) holds the ridge weights after all `n` examples."""),
    new_code_cell("""\
w_rows = model.layout.rows("w")
name = f"blocks.{L}.hook_resid_pre"
_, cache_A = model.run_with_cache(tokA)
_, cache_B = model.run_with_cache(tokB)
w_A, w_B = cache_A[name][0, T - 2, w_rows], cache_B[name][0, T - 2, w_rows]
print("w_A from the residual stream:", w_A.numpy(), " ridge:", ic.reference.ridge(XA, yA, lam))
print("w_B from the residual stream:", w_B.numpy(), " ridge:", ic.reference.ridge(XB, yB, lam))"""),
    new_markdown_cell("""\
Patch with the native model's TransformerLens-style hooks: the prediction on task A's context
jumps to `x_qᵀw_B`. The bound is the error the circuit states for that last product."""),
    new_code_cell("""\
def patch(h, hook_name):
    h = h.clone()
    h[:, T - 2, w_rows] = w_B
    return h

clean = model(tokA)[0, -1]
model.add_hook(name, patch)
patched = model(tokA)[0, -1]
model.reset_hooks()
algebra = xq @ w_B.numpy()
bound = d * model.constants.product_error(model.layout["wq"].bound, model.layout["x"].bound)
print(f"clean prediction     {clean:+.10f}  (x_q·w_A = {xq @ w_A.numpy():+.10f})")
print(f"patched prediction   {patched:+.10f}")
print(f"the algebra: x_q·w_B {algebra:+.10f}   |difference| = {abs(patched - algebra):.1e} <= {bound:.1e}")
assert abs(patched - algebra) <= 1e-9 * (1 + abs(algebra)) + bound"""),
    new_markdown_cell("""\
A patch at the input of the last loop block does nothing (up to round-off): every loop block recomputes each ỹ column's state from
the column two to the left (the wavefront of §8 in the construction notes), so the readout layer
is the one place where `w` is read for the query. Patching is a question about the algorithm."""),
    new_code_cell("""\
earlier = f"blocks.{L - 3}.hook_resid_pre"
_, cache_B = model.run_with_cache(tokB)
w_B_early = cache_B[earlier][0, T - 2, w_rows]
def patch_early(h, hook_name):
    h = h.clone()
    h[:, T - 2, w_rows] = w_B_early
    return h
model.add_hook(earlier, patch_early)
early = model(tokA)[0, -1]
model.reset_hooks()
print("patched at the last loop block's input:", early, " clean:", clean)
assert abs(early - clean) < 1e-8 and abs(early - algebra) > 1e-3"""),
    new_markdown_cell("""\
The same patch in a stock TransformerLens `HookedTransformer` (weights loaded through its own
state dict, loops unrolled for `n` examples), through `run_with_hooks`:"""),
    new_code_cell("""\
if importlib.util.find_spec("transformer_lens") is not None:
    tl = model.to_transformer_lens(n)
    resid_A = ic.export.tokens_to_inputs(tl, tokA)      # tokens @ W_E + W_pos, fed with start_at_layer=0
    _, tl_cache_B = tl.run_with_cache(ic.export.tokens_to_inputs(tl, tokB), start_at_layer=0)
    w_B_tl = tl_cache_B[name][0, T - 2, w_rows]

    def tl_patch(h, hook):
        h[:, T - 2, w_rows] = w_B_tl
        return h

    with torch.no_grad():
        out = tl.run_with_hooks(resid_A, start_at_layer=0, fwd_hooks=[(name, tl_patch)])
    print("TransformerLens patched prediction:", float(out[0, -1, 0]), " algebra:", algebra)
    assert abs(float(out[0, -1, 0]) - algebra) <= 1e-9 * (1 + abs(algebra)) + bound
else:
    print("transformer_lens is not installed: pip install 'iclconstruct[tl]'")"""),
]

NOTEBOOKS = {
    "01_gradient_descent_step.ipynb": NB01,
    "02_ridge_precision.ipynb": NB02,
    "03_compose_your_own_circuit.ipynb": NB03,
    "04_trained_vs_constructed.ipynb": NB04,
    "05_probing.ipynb": NB05,
    "06_write_your_own_algorithm.ipynb": NB06,
    "07_activation_patching.ipynb": NB07,
}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):  # stable ids: regenerating gives identical files
        c["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), EXAMPLES / name)
        print("wrote", EXAMPLES / name)


if __name__ == "__main__":
    main()
