"""Generate docs/api.md from the docstrings of iclconstruct's public names.

    python docs/gen_api.py            # rewrite docs/api.md
    python docs/gen_api.py --check    # exit 1 if docs/api.md is out of date

Public names are each module's ``__all__`` (for ``iclconstruct.icl``, which has none, the
names it imports from its own submodules). tests/test_docs.py fails when the file is stale.
"""
from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import sys
import types

OUT = pathlib.Path(__file__).resolve().parent / "api.md"
SRC = OUT.parent.parent / "src"
if str(SRC) not in sys.path:  # document this checkout, not whatever iclconstruct is installed
    sys.path.insert(0, str(SRC))

#: (module, one-line role) in the order they appear
MODULES = [
    ("iclconstruct", "programs, the compiler, the compiled model"),
    ("iclconstruct.circuits", "the paper's algorithms as compiled circuits (Theorems 1 and 2)"),
    ("iclconstruct.tokens", "the paper's token layout (Eq. 12)"),
    ("iclconstruct.reference", "numpy reference solvers"),
    ("iclconstruct.runtime", "running circuits at scale: pruned schedule, streaming, sparse blocks, batched checks"),
    ("iclconstruct.testing", "hypothesis strategies and the model-vs-interpreter assertion"),
    ("iclconstruct.io", "saving and loading compiled circuits"),
    ("iclconstruct.viz", "pictures of a circuit"),
    ("iclconstruct.icl", "trained in-context learners and the empirical study"),
    ("iclconstruct.icl.predictors", "classical predictors with one interface"),
    ("iclconstruct.icl.plots", "figures of the empirical study"),
    ("iclconstruct.errors", "exception types"),
]


def public_names(mod: types.ModuleType):
    names = getattr(mod, "__all__", None)
    if names is None:
        names = sorted(n for n, v in vars(mod).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
                       and getattr(v, "__module__", "").startswith(mod.__name__))
    return [n for n in names if not isinstance(getattr(mod, n, None), types.ModuleType)]


def _sig(obj) -> str:
    try:
        s = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r" at 0x[0-9a-f]+", "", s)  # no memory addresses: the output must be stable


def _doc(obj) -> str:
    """The docstring in a ``text`` fence (keeps its layout; never executed by the docs test)."""
    d = (inspect.getdoc(obj) or "").strip()
    return f"```text\n{d}\n```" if d else "*(no docstring)*"


def _methods(cls):
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in ("__call__",):
            continue
        if isinstance(member, property):
            out.append((name, "", member.__doc__ or ""))
        elif isinstance(member, (classmethod, staticmethod)):
            f = member.__func__
            out.append((name, _sig(f), inspect.getdoc(f) or ""))
        elif inspect.isfunction(member):
            out.append((name, _sig(member), inspect.getdoc(member) or ""))
    return out


def _first_paragraph(text: str) -> str:
    return text.strip().split("\n\n")[0].replace("\n", " ") if text else ""


def render_object(qual: str, obj) -> str:
    lines = []
    if inspect.isclass(obj):
        lines += [f"### class `{qual}{_sig(obj)}`", "", _doc(obj), ""]
        ms = _methods(obj)
        if ms:
            lines += ["| member | summary |", "|---|---|"]
            for name, sig, doc in ms:
                summary = _first_paragraph(doc).replace("|", "\\|")
                lines.append(f"| `{name}{sig}` | {summary} |".replace("`` |", "` |"))
            lines.append("")
    elif callable(obj):
        lines += [f"### `{qual}{_sig(obj)}`", "", _doc(obj), ""]
    else:
        lines += [f"### `{qual}`", "", f"`{obj!r}`" if isinstance(obj, (int, float, str, tuple)) else _doc(obj), ""]
    return "\n".join(lines)


def render() -> str:
    parts = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand "
             "(tests/test_docs.py fails when this file is out of date).", ""]
    parts += [f"- [`{m}`](#{m.replace('.', '')}) — {role}" for m, role in MODULES] + [""]
    for modname, role in MODULES:
        mod = importlib.import_module(modname)
        parts += [f"## {modname}", "", f"*{role}*", ""]
        head = _first_paragraph(inspect.getdoc(mod) or "")
        if head:
            parts += [head, ""]
        for name in public_names(mod):
            obj = getattr(mod, name)
            parts.append(render_object(f"{modname}.{name}", obj))
    text = "\n".join(parts).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date; run: python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
