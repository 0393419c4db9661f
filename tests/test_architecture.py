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


CONVERTERS = {  # script: its schema's class name
    "llama_from_hf": "FromHFArgs",
    "llama_to_hf": "ToHFArgs",
    "llama_from_gguf": "FromGGUFArgs",
    "spiritlm_checkpoints": "TreeArgs",
    "hubert_from_fairseq": "Args",
    "hubert_from_hf": "Args",
    "hifigan_from_pt": "Args",
    "speech_quantizer_from_pt": "Args",
    "f0_vqvae_from_pt": "Args",
    "kmeans_from_npy": "Args",
    "fcpe_from_torchfcpe": "Args",
    "style_from_hf": "Args",
    "wav2vec2_ctc_from_hf": "Args",
    "hifigan_to_pt": "Args",
}


def _clis():
    import importlib

    from spiritlm_jax.alignment.run import AlignConfig
    from spiritlm_jax.data.prepare import PrepareConfig
    from spiritlm_jax.evaluation.suite import SuiteConfig
    from spiritlm_jax.evaluation.tasks import TASKS
    from spiritlm_jax.finetune_data import PairsConfig
    from spiritlm_jax.generate import GenerateConfig
    from spiritlm_jax.kmeans import KMeansCLIConfig
    from spiritlm_jax.merge import MergeConfig
    from spiritlm_jax.training.config import TrainConfig
    from spiritlm_jax.training.finetune import FinetuneConfig
    from spiritlm_jax.vocoder_training.config import VocoderTrainConfig

    out = [
        ("spiritlm_jax.train", [], TrainConfig),
        ("spiritlm_jax.train_vocoder", [], VocoderTrainConfig),
        ("spiritlm_jax.finetune", [], FinetuneConfig),
        ("spiritlm_jax.finetune_data", [], PairsConfig),
        ("spiritlm_jax.merge", [], MergeConfig),
        ("spiritlm_jax.prepare", [], PrepareConfig),
        ("spiritlm_jax.generate", [], GenerateConfig),
        ("spiritlm_jax.kmeans", [], KMeansCLIConfig),
        ("spiritlm_jax.align", [], AlignConfig),
        ("spiritlm_jax.evaluate", ["suite"], SuiteConfig),
    ]
    out += [("spiritlm_jax.evaluate", [task], schema) for task, (schema, _, _) in TASKS.items()]
    for script, cls in CONVERTERS.items():
        mod = importlib.import_module(f"tools.convert_weights.{script}")
        out.append((mod.__name__, [], getattr(mod, cls)))
    return out


def test_every_cli_is_on_the_one_config_loader_and_its_help_lists_every_key(capsys):
    """Each CLI's `--help` exits 0 and lists every key of its schema (type, default, doc); an unknown
    option is a config error (exit 2) naming it. Converters included."""
    import importlib

    from spiritlm_jax.config import describe_keys

    scripts = {p.stem for p in (ROOT / "tools" / "convert_weights").glob("*.py")} - {"__init__", "common"}
    assert scripts == set(CONVERTERS), "a converter without a --help check"
    for module, prefix, schema in _clis():
        main = importlib.import_module(module).main
        assert main(prefix + ["--help"]) == 0, module
        text = capsys.readouterr().out
        assert "keys (type, default):" in text, module
        for key, *_ in describe_keys(schema):
            assert f"  {key} " in text, f"{module} {prefix}: --help does not list {key}"
        assert main(prefix + ["--no-such-option", "1"]) == 2, module
        assert "no-such-option" in capsys.readouterr().err, module
