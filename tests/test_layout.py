"""The package's import boundaries, read from the source: ``core`` imports no other newsrank
module, ``seq`` imports only ``core`` and itself (never the news stack), and no model imports the
trainer, the evaluator, checkpoints or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "newsrank"


def newsrank_imports(path: Path) -> set[str]:
    """Absolute names of the newsrank modules ``path`` imports (relative imports resolved)."""
    module = "newsrank." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "newsrank"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "newsrank":
                found.add(name)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return name == "newsrank" or any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_imports_no_other_newsrank_module(path):
    bad = [n for n in newsrank_imports(path) if not allowed(n, ("newsrank.core",))]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", modules("seq"), ids=lambda p: p.name)
def test_seq_imports_only_core_and_itself(path):
    bad = [n for n in newsrank_imports(path) if not allowed(n, ("newsrank.core", "newsrank.seq"))]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", modules("models"), ids=lambda p: p.name)
def test_models_import_no_trainer(path):
    forbidden = ("newsrank.train", "newsrank.evaluate", "newsrank.checkpoint", "newsrank.cli", "newsrank.seq")
    bad = [n for n in newsrank_imports(path) if allowed(n, forbidden) and n != "newsrank"]
    assert not bad, f"{path.name} imports {bad}"


def test_the_boundaries_are_read_correctly():
    """The reader resolves relative imports (a check that the tests above can fail)."""
    assert "newsrank.core.config" in newsrank_imports(PACKAGE / "config.py")
    assert "newsrank.core.runtime" in newsrank_imports(PACKAGE / "seq" / "train.py")
    assert "newsrank.data.batching" in newsrank_imports(PACKAGE / "models" / "fim.py")


def test_importing_the_sequence_package_loads_no_news_model():
    import subprocess
    import sys

    code = ("import sys, newsrank.seq.events, newsrank.seq.train; "
            "print(sorted(m for m in sys.modules if m.startswith('newsrank.') and not "
            "(m.startswith('newsrank.seq') or m.startswith('newsrank.core'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_part_map_names_files_that_exist():
    """Every path in the README's "What is in it" table exists (the map follows the tree)."""
    import re

    root = PACKAGE.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    table = text.split("## What is in it", 1)[1].split("\n## ", 1)[0]
    paths = [p for row in table.splitlines() if row.startswith("| ") and "`" in row.rsplit("|", 2)[-2]
             for p in re.findall(r"`([^`]+)`", row.rsplit("|", 2)[-2])]
    assert len(paths) >= 10
    for path in paths:  # repository-relative, or (as `data/vocab.py` after `newsrank/data/mind.py`) package-relative
        found = [m for base in (root, PACKAGE) for m in base.glob(path)]
        assert found, f"README names {path}, which does not exist"
