"""mdlm_tui/ is grouped by feature (run_list, configure, train, eval, samples), each folder holding its
screen, its widgets and its worker code; torch enters the TUI only through the modules each folder's
docstring names, and only inside functions, so importing any screen stays fast.

Read from the source with `ast`; the import-time checks themselves are in test_fast_start.py.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("run_list", "configure", "train", "eval", "samples")
# feature folder -> the module through which torch enters it (None: it never does)
TORCH_ENTRIES = {
    "run_list": "export_dialog",
    "configure": "previews",
    "train": None,
    "eval": "runner",
    "samples": "runner",
}


def _module_level_imports(path: Path) -> list[str]:
    """The modules imported when `path` is imported: module and class bodies, not function bodies."""
    found: list[str] = []

    def visit(statements) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append(node.module)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def _loads_torch(module: str) -> bool:
    return module == "torch" or module.startswith("torch.")


def test_every_feature_has_its_folder_and_screen():
    for feature in FEATURES:
        assert (ROOT / "mdlm_tui" / feature / "screen.py").is_file(), feature


def test_each_feature_folder_says_where_torch_enters():
    for feature, entry in TORCH_ENTRIES.items():
        doc = importlib.import_module(f"mdlm_tui.{feature}").__doc__ or ""
        assert "torch" in doc, feature
        if entry is not None:
            assert f"{entry}.py" in doc, feature


def test_no_tui_module_imports_torch_or_a_torch_engine_module_at_import_time():
    torch_core = {
        f"core.{path.stem}"
        for path in (ROOT / "core").glob("*.py")
        if any(_loads_torch(name) for name in _module_level_imports(path))
    }
    assert "core.evaluate" in torch_core  # the check sees the engine's torch modules
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "mdlm_tui").rglob("*.py"))
        for name in _module_level_imports(path)
        if _loads_torch(name) or name in torch_core
    }
    assert not offenders
