"""Every notebook reads as a lesson: typed parameters, short cells, exercises with solutions, references.

The solutions in ``notebooks/solutions/NN_topic.py`` are executed here: each exercise is a function
``exercise_N()`` that computes its answer with the package and asserts what the solution claims.
"""

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from fundus_nb import runs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = ROOT / "notebooks" / "solutions"
MAX_LOGIC_LINES = 15


def logic_lines(source: str) -> int:
    """Lines of a code cell that do something: not blank, not a comment, not a lone closing bracket."""
    return sum(1 for line in source.splitlines()
               if line.strip() and not line.strip().startswith("#") and line.strip() not in {")", "]", "}", "})"})


def test_logic_line_counter_on_a_known_cell():
    cell = "# a comment\n\nx = 1\nf(\n    x,\n)\nprint(x)  # shown\n"
    assert logic_lines(cell) == 4  # x = 1, f(, x,, print


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_is_longer_than_fifteen_logic_lines(path):
    nb = nbformat.read(str(path), as_version=4)
    long = [(i, logic_lines(c.source)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and "parameters" not in c.metadata.get("tags", []) and logic_lines(c.source) > MAX_LOGIC_LINES]
    assert not long, f"{path.name}: cells (index, logic lines) over {MAX_LOGIC_LINES}: {long}; move logic out"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_typed_and_commented(path):
    nb = nbformat.read(str(path), as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    lines = [x for x in cell.source.splitlines() if x.strip() and not x.strip().startswith("#")]
    for line in lines:
        assert re.match(r"^\w+: (int|float|str|bool) = .+#\s*\S", line), (
            f"{path.name}: parameter line {line!r} needs a type annotation and a comment")
    assert set(runs.notebook_parameters(path)) == {x.split(":")[0] for x in lines}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_and_references(path):
    nb = nbformat.read(str(path), as_version=4)
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    exercises = [s for s in md if s.lstrip().startswith("## Exercises")]
    assert len(exercises) == 1, f"{path.name}: one markdown cell starting '## Exercises'"
    items = re.findall(r"^\d+\. ", exercises[0], flags=re.M)
    assert 3 <= len(items) <= 5, f"{path.name}: 3 to 5 numbered exercises, found {len(items)}"
    assert f"solutions/{path.stem}.py" in exercises[0], f"{path.name}: the exercises cell links its solutions"
    refs = [s for s in md if s.lstrip().startswith("## References")]
    assert len(refs) == 1, f"{path.name}: one markdown cell starting '## References'"
    solution = SOLUTIONS / f"{path.stem}.py"
    assert solution.is_file(), f"missing {solution.relative_to(ROOT)}"
    funcs = [n.name for n in ast.parse(solution.read_text()).body if isinstance(n, ast.FunctionDef)]
    assert [f for f in funcs if f.startswith("exercise_")] == [f"exercise_{i + 1}" for i in range(len(items))], (
        f"{solution.name}: one exercise_N() per exercise of the notebook")


def _solution_cases():
    for path in NOTEBOOKS:
        sol = SOLUTIONS / f"{path.stem}.py"
        if not sol.is_file():
            continue
        for node in ast.parse(sol.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("exercise_"):
                yield pytest.param(sol, node.name, id=f"{path.stem}-{node.name}")


@pytest.mark.notebooks
@pytest.mark.parametrize("solution, name", list(_solution_cases()))
def test_solution_runs(solution, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    spec = importlib.util.spec_from_file_location(f"solution_{solution.stem}", solution)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getattr(module, name)()  # each exercise asserts its own claims
