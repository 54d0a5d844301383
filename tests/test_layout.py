"""The house's rules, read from the source: packages import only what DESIGN's layout allows (also under
TYPE_CHECKING and inside functions), modules import no cycle at load time, and no module is over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("shards", "tools", "agents", "factory", "detector", "bench")
ALLOWED = {  # factory -> agents -> tools; factory, agents, detector -> shards; detector.repair -> factory, tools.flux
    "shards": set(), "tools": set(), "agents": {"tools", "shards"}, "factory": {"agents", "tools", "shards"},
    "detector": {"shards", "factory", "tools"}, "bench": {"shards", "tools", "agents", "factory", "detector"}}
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_packages_import_only_what_the_layout_allows():
    wrong = []
    for name, path in _modules().items():
        package = name.split(".")[0]
        for line, imported in _imports(path, top_level_only=False):
            top = imported.split(".")[0]
            if top in LAYERS and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_tools_and_the_record_name_the_same_tools():
    from shards.record import ARTIFACT_TOOLS
    from tools.settings import TOOLS

    assert TOOLS == ARTIFACT_TOOLS


def test_no_import_cycle_at_load_time():
    modules = _modules()
    graph = {name: {m for _, m in _imports(path, top_level_only=True) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [name, nxt])
            if nxt not in state:
                visit(nxt, path + [name])
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [])


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
