"""The documentation stays true: every ```python block in docs/*.md and README.md runs, and
docs/api.md matches the docstrings (regenerate with ``python docs/gen_api.py``).

Blocks of one file run in order in one namespace, in a scratch working directory. A block
fenced as ```python no-run (or any other language) is not executed.
"""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def python_blocks(text: str):
    """``(line number, code)`` of every block fenced exactly as ```python."""
    out = []
    for m in FENCE.finditer(text):
        if m.group(1).strip() == "python":
            out.append((text.count("\n", 0, m.start()) + 2, m.group(2)))
    return out


def test_fence_parser():
    text = "a\n```python\nx = 1\n```\n```python no-run\nboom()\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert [c for _, c in python_blocks(text)] == ["x = 1\n", "y = x\n"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    ns = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), ns)
        except Exception as exc:  # report the page and line of the failing block
            raise AssertionError(f"{page.name}, block at line {line} failed: {type(exc).__name__}: {exc}") from exc


def test_api_md_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert current == gen.render(), "docs/api.md is out of date: run  python docs/gen_api.py"
