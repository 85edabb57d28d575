"""Every example in examples/ runs (CI executes them all)."""
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path):
    r = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_cli_demo_is_the_main_job():
    r = subprocess.run([sys.executable, "-m", "iclconstruct", "demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "all within 1e-6" in r.stdout


def test_ci_runs_the_readme_test_command():
    root = pathlib.Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    blocks = readme.split("```bash\n")
    test_cmd = blocks[2].split("```")[0].strip()
    assert "pytest" in test_cmd
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, "README's test command and .ci/run disagree"
