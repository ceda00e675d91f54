"""The project's set-up files agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r.replace(" ", "") for r in project["dependencies"]}
    for extra in ("dev", "lab"):
        wanted |= {r.replace(" ", "") for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert listed == wanted, (
        f"only in pyproject: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"
    )
    assert any(r.startswith("-e .") for r in pip_section), "environment.yml must install the package itself"


def test_torch_is_pinned_to_the_local_cpu_build():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [r for r in project["dependencies"] if _name(r) == "torch"]
    assert torch == ["torch==2.13.0"]
    assert not any(_name(r) == "torchvision" for r in project["dependencies"])


def test_ci_calls_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme


def test_module_order_has_no_backward_imports():
    order = ["_io", "data", "preprocess", "patches", "models", "egl", "ses", "train", "lesions", "monitor",
             "metrics", "egl_report", "ses_report", "eval_report", "labelling", "plots", "widgets", "runs", "__main__"]
    rank = {name: i for i, name in enumerate(order)}
    # egl and ses are siblings, as are plots and widgets: neither may import the other.
    siblings = {frozenset({"egl", "ses"}), frozenset({"plots", "widgets"})}
    pkg = ROOT / "fundus_nb"
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg)
        if rel.parts == ("__init__.py",):
            continue
        mod = rel.parts[0] if len(rel.parts) > 1 else path.stem  # any fundus_nb/<sub>/ module ranks as <sub>
        assert mod in rank, f"{rel} is not placed in the module order; add it to DESIGN/CONTRACTS"
        text = path.read_text()
        # relative imports reach the package's modules with one dot per folder level (`.x` at the top,
        # `..x` inside fundus_nb/<sub>/); fewer dots stay inside the same subpackage, hence the same rank
        dots = r"\." * len(rel.parts)
        pattern = rf"from {dots}(\w+)[\w.]* import|from fundus_nb\.(\w+)[\w.]* import|import fundus_nb\.(\w+)"
        names = {n for group in re.findall(pattern, text) for n in group if n}
        # `from .. import a, b` on one line, or a parenthesised list over several lines
        for groups in re.findall(rf"from (?:{dots}|fundus_nb) import (?:\(([\w,\s]+)\)|([\w, ]+))", text):
            names |= {n.strip() for group in groups for n in group.split(",") if n.strip()}
        for other in names:
            if other not in rank or other == mod:
                continue
            assert rank[other] < rank[mod] and frozenset({mod, other}) not in siblings, (
                f"fundus_nb/{rel} imports {other}, which comes after it in the module order"
            )
