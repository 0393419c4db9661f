"""The shape of the house: layer contracts, no import cycles, lint and format clean.

These run in the test command so that a new cycle, an upward import or unformatted code fails CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    exe = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(exe).exists():
        pytest.fail(f"{name} is not installed (it is in the test extra: pip install -e '.[test]')")
    return [exe]


def test_import_linter_contracts_hold():
    r = subprocess.run(
        _tool("lint-imports") + ["--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "broken" not in r.stdout.lower().replace("0 broken", "")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    out.append(comp)
    return out


def test_strongly_connected_finds_a_cycle():
    comps = strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(map(sorted, comps)) == [["a", "b", "c"], ["d"]]


def test_no_import_cycles_counting_function_level_imports():
    g = grimp.build_graph("spiritlm_jax", exclude_type_checking_imports=True)
    graph = {m: g.find_modules_directly_imported_by(m) for m in g.modules}
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, f"import cycles in spiritlm_jax: {cycles}"


def test_ruff_lint_and_format_clean():
    r = subprocess.run(_tool("ruff") + ["check", "--quiet", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    r = subprocess.run(_tool("ruff") + ["format", "--check", "--quiet", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, "ruff format would change:\n" + r.stdout[-4000:] + r.stderr[-2000:]


def test_docs_do_not_point_outside_the_repository():
    hits = []
    for path in [
        ROOT / "README.md",
        ROOT / "DEVELOPERS.md",
        *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("spiritlm_jax/**/*.py"),
        *ROOT.glob("tools/**/*.py"),
        *ROOT.glob("benchmarks/*.py"),
    ]:
        if "SPEC.md" in path.read_text(errors="replace"):
            hits.append(str(path.relative_to(ROOT)))
    assert not hits, f"files refer to SPEC.md, which is not part of the project: {hits}"


def test_markdown_links_to_repository_files_exist():
    missing = []
    for path in [ROOT / "README.md", ROOT / "DEVELOPERS.md", *ROOT.glob("docs/**/*.md")]:
        for target in re.findall(
            r"`((?:docs|configs|benchmarks|tools|spiritlm_jax|tests)/[\w./-]+\.(?:md|yaml|py))`", path.read_text()
        ):
            if not (ROOT / target).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, f"docs name files that do not exist: {missing}"
