"""``compile`` builds and installs one layer at a time: the weights are bit-identical to building
every layer first, and peak memory stays near the size of the parameters (Newton at d = 16 has
~720M float64 parameters; building all layers' units and weights before the model took 2.3×)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import iclconstruct as ic
from iclconstruct.compiler import build as B
from iclconstruct.compiler.config import ConstructedTransformerConfig
from iclconstruct.compiler.model import ConstructedTransformer, LayerWeights
from iclconstruct.numerics.constants import Constants
from iclconstruct.numerics.ranges import operand_scales

from edgecases import edge_program

C = ic.circuits


def all_at_once(program, *, dtype=torch.float64, block="paper", max_len=None, constants=None):
    """The straightforward path: every layer's builders, then every layer's weights, then the model."""
    max_len = max_len or ic.lang.embedding.DEFAULT_MAX_LEN
    program = program.frozen(max_len=max_len)
    c = constants or Constants.for_dtype(dtype, block=block)
    pre_ln = block == "pre_ln"
    lay, sched = program.layout, B.schedule(program)
    scales = operand_scales(program, c.div_min)
    plans = [p for seg in sched.segments for p in seg.layers]

    def builders(D):
        out = []
        for plan in plans:
            ab, unscale = B._attention(plan, lay, D, c, max_len, pre_ln)
            out.append((ab, B._mlp(plan, lay, D, c, unscale, max_len, scales, pre_ln)))
        return out

    D = lay.size
    bs = builders(D)
    n_heads = max([ab.n_heads() for ab, _ in bs] + [1])
    d_head = max([ab.d_head() for ab, _ in bs] + [2])
    if pre_ln and D != max(-(-D // d_head), n_heads) * d_head:
        D = max(-(-D // d_head), n_heads) * d_head
        bs = builders(D)
    d_mlp = max([len(mb) for _, mb in bs] + [1])
    layers = [LayerWeights(heads=ab.heads(d_head), mlp=mb.weights(d_mlp)) for ab, mb in bs]
    W_E, W_pos = B.embedding(lay, D, c, max_len, c.pre_ln_anchor if pre_ln else None)
    cfg = ConstructedTransformerConfig(
        n_layers=len(layers), d_model=D, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp, d_vocab=lay.d + 1,
        max_len=int(max_len), segments=tuple((len(s.layers), s.repeat) for s in sched.segments),
        block=block, act_fn=c.activation, ln_eps=c.ln_eps, dtype=dtype)
    return ConstructedTransformer(cfg, program=program, schedule=sched, constants=c, layers=layers,
                                  W_E=W_E, W_pos=W_pos, operand_scales=scales)


PROGRAMS = {
    "sgd": lambda: C.sgd_program(3, 0.05),
    "ridge": lambda: C.ridge_program(2, 1.0),
    "edge": edge_program,
    "gd_plus_plus": lambda: C.gd_plus_plus_algorithm(3, 0.005, 0.005, steps=2).program(),
}
CASES = [(name, block, dtype) for name in PROGRAMS for block in ("paper", "pre_ln")
         for dtype in (torch.float64, torch.float32)]


@pytest.mark.parametrize("name,block,dtype", CASES)
def test_weights_bit_identical_to_building_every_layer_first(name, block, dtype):
    got = ic.compile(PROGRAMS[name](), block=block, dtype=dtype)
    # the constants compile chose (in float64, the anchors its certificate search picked)
    want = all_at_once(PROGRAMS[name](), block=block, dtype=dtype, constants=got.constants)
    assert got.cfg == want.cfg
    sg, sw = got.state_dict(), want.state_dict()
    assert list(sg) == list(sw)
    for k in sg:
        assert sg[k].dtype == sw[k].dtype and torch.equal(sg[k], sw[k]), k
    assert [b.mlp.unit_labels for b in got.blocks] == [b.mlp.unit_labels for b in want.blocks]
    assert [b.attn.head_labels for b in got.blocks] == [b.attn.head_labels for b in want.blocks]


def test_layers_generator_installs_each_layer_once():
    """The model takes its layers from any iterable, one at a time."""
    prog = C.sgd_program(2, 0.05)
    m = ic.compile(prog)
    again = ConstructedTransformer(m.cfg, program=m.program, schedule=m.schedule, constants=m.constants,
                                   layers=iter([LayerWeights(heads=[], mlp=_mlp_of(b)) for b in m.blocks]),
                                   W_E=m.W_E.numpy(), W_pos=m.W_pos.numpy())
    for a, b in zip(m.blocks, again.blocks):
        assert torch.equal(a.mlp.W_in, b.mlp.W_in) and torch.equal(a.mlp.W_out, b.mlp.W_out)


def _mlp_of(block):
    from iclconstruct.compiler.mlp import MLPWeights

    p = block.mlp
    return MLPWeights(p.W_in.numpy(), p.b_in.numpy(), p.W_out.numpy(), p.b_out.numpy(), p.unit_labels)


PEAK = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    import iclconstruct as ic
    prog = ic.circuits.newton_algorithm(8, 8, m_bound=20.0).program()
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1]) * resource.getpagesize()
    m = ic.compile(prog)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so it would report the parent's
    # resident set at fork (a large pytest process) instead of this interpreter's own peak
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) * 1024
    print(json.dumps({"param_bytes": sum(p.numel() * p.element_size() for p in m.parameters()),
                      "extra": peak - rss_before}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm and /proc/self/status")
def test_peak_memory_of_compile_stays_near_the_parameters():
    """Newton d = 8 (27M parameters, 209 MiB): compiling adds at most 1.25× the parameters' bytes
    (+32 MiB) to the resident set; building every layer first took 2.2×."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(ic.__file__)),
                                                                 os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", PEAK], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["param_bytes"] > 200 * 2 ** 20
    assert r["extra"] <= 1.25 * r["param_bytes"] + 32 * 2 ** 20, r


SPARSE_PEAK = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    import iclconstruct as ic
    from iclconstruct.circuit_file import dense_bytes
    prog = ic.circuits.ridge_program(32, 0.1)
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1]) * resource.getpagesize()
    m = ic.compile(prog, sparse=True, max_len=65)
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) * 1024
    print(json.dumps({"dense_bytes": dense_bytes(m), "extra": peak - rss_before, "sparse": m.is_sparse}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm and /proc/self/status")
def test_sparse_build_peaks_far_below_the_dense_weights():
    """Ridge d = 32 (≈ 217M dense parameters, 1.7 GB): building sparse from the start adds under 5% of the
    dense weights' bytes to the resident set. The dense build holds at least those bytes (the test above:
    up to 2.25× them), so the sparse build peaks over 20× lower."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(ic.__file__)),
                                                                 os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", SPARSE_PEAK], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["sparse"] and r["dense_bytes"] > 1.5 * 2 ** 30
    assert r["extra"] <= 0.05 * r["dense_bytes"], r
