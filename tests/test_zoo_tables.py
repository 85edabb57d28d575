"""The zoo cost tables in docs/circuit_<name>.md are what ``bench/bench_zoo.py --docs`` writes from
bench/zoo_results.jsonl, and the jsonl has every cell (d ∈ {2, 8, 16}, n ∈ {8, 32}) with its
float64 model error."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_zoo", ROOT / "bench" / "bench_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_cell_is_measured_compiled(bench):
    recs = {(r["name"], r["d"], r["n"]): r for r in bench.load()}
    for name in bench.NAMES:
        for d in bench.DIMS:
            for n in bench.NS:
                r = recs[(name, d, n)]
                assert r.get("model_err") is not None, (name, d, n, r.get("error"))
                assert r["params"] > 0 and r["depth_n"] == r["depth_256"]


@pytest.mark.parametrize("name", ["batch_gd", "preconditioned_gd", "gd_plus_plus", "newton"])
def test_docs_table_is_the_jsonl(bench, name):
    text = (ROOT / "docs" / f"circuit_{name}.md").read_text()
    m = re.search(r"<!-- bench:zoo -->\n(.*?)\n<!-- /bench:zoo -->", text, re.S)
    assert m, f"marker bench:zoo missing in circuit_{name}.md"
    recs = bench.load()
    assert m.group(1) == bench.stamp(name, recs) + "\n\n" + bench.table_of(name, recs)


def test_store_replaces_the_cell_record(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "OUT", str(tmp_path / "zoo.jsonl"))
    bench.store({"name": "newton", "d": 2, "n": 8, "model_err": None, "error": "x"})
    bench.store({"name": "newton", "d": 2, "n": 32, "model_err": 1e-9})
    bench.store({"name": "newton", "d": 2, "n": 8, "model_err": 2e-9})
    assert [(r["n"], r["model_err"]) for r in bench.load()] == [(8, 2e-9), (32, 1e-9)]
