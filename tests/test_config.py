"""The config dataclass says the architecture fully; hook names are defined once."""
import numpy as np
import pytest
import torch

import iclconstruct as ic
from iclconstruct import errors as E
from iclconstruct.compiler.config import ConstructedTransformerConfig
from iclconstruct.compiler.hooks import EMBED_HOOK_NAMES, HOOK_NAMES, block_hook


def _model(**kw):
    return ic.circuits.ridge(2, 0.5, max_len=17, **kw)


def test_config_says_the_shape():
    m = _model()
    c = m.cfg
    assert (c.d_model, c.n_heads, c.d_head, c.d_mlp, c.max_len, c.dtype) == \
        (m.d_model, m.n_heads, m.d_head, m.d_mlp, m.max_len, m.dtype)
    assert c.n_layers == len(m.blocks) and c.d_vocab == m.d + 1 and c.block == m.block_style == "paper"
    assert c.act_fn == "gelu" and c.ln_eps == m.constants.ln_eps
    assert m.blocks[0].attn.W_Q.shape == (c.n_heads, c.d_model, c.d_head)
    assert m.blocks[0].mlp.W_in.shape == (c.d_model, c.d_mlp)
    assert m.W_pos.shape == (c.max_len, c.d_model) and m.W_E.shape == (c.d_vocab, c.d_model)
    T = 9
    assert len(m.unrolled(T)) == sum(n * (T // 2 if r == "examples" else r) for n, r in c.segments)


def test_config_round_trips_and_validates():
    c = _model(dtype=torch.float32).cfg
    assert ConstructedTransformerConfig.from_dict(c.to_dict()) == c
    for bad in (dict(block="pre-ln"), dict(act_fn="relu"), dict(n_heads=0), dict(dtype=torch.int64),
                dict(segments=((1, 1),))):
        with pytest.raises(E.ICLConstructError):
            ConstructedTransformerConfig(**{**c.__dict__, **bad})


def test_every_hook_name_is_produced_and_no_other():
    m = _model()
    tok = ic.tokens.encode(np.ones((2, 2)) * 0.3, np.ones(2), np.ones(2) * 0.3)
    _, cache = m.run_with_cache(tok)
    n = len(m.unrolled(tok.shape[1]))
    want = set(EMBED_HOOK_NAMES) | {block_hook(l, name) for l in range(n) for name in HOOK_NAMES}
    assert set(cache.keys()) == want
    with pytest.raises(KeyError):
        block_hook(0, "hook_nonsense")


def test_run_with_cache_keeps_the_users_hooks():
    m = _model()
    tok = ic.tokens.encode(np.ones((2, 2)) * 0.3, np.ones(2), np.ones(2) * 0.3)
    seen = []
    m.add_hook("hook_embed", lambda x, name: seen.append(name))
    m.run_with_cache(tok)
    assert m.hooks.active and seen == ["hook_embed"]
    m(tok)
    assert seen == ["hook_embed", "hook_embed"]
    m.reset_hooks()
    assert not m.hooks.active


def test_saved_config_is_checked_on_load(tmp_path):
    import json

    folder = ic.io.save(_model(), tmp_path / "r")
    doc = json.loads((folder / "circuit.json").read_text())
    assert doc["config"] == _model().cfg.to_dict()
    doc["config"]["d_mlp"] += 1
    (folder / "circuit.json").write_text(json.dumps(doc))
    with pytest.raises(E.CheckpointError, match="config"):
        ic.io.load(folder)


def test_richardson_product_scale_refusal_states_its_own_formula():
    """A float32 Richardson product at N = 4 errs by 0.35/N⁴ + 7.5·ε·N = 1.4e-3 > 1e-3: the message
    gives that formula and its minimiser (≈ 17), not the plain product's (Lemma 4, N ≈ 200)."""
    import pytest
    import torch

    import iclconstruct as ic

    with pytest.raises(ic.errors.ICLConstructError, match=r"Richardson.*near 17\.3") as e:
        ic.circuits.sgd(2, 0.1, dtype=torch.float32, constants=ic.Constants.float32(product_scale=4.0))
    assert "product_scale" in str(e.value)
