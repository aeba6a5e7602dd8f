"""The structure ARCHITECTURE.md describes, kept true: which module may import which library, no import
cycles between the engine's modules, the public API, and batches changing representation in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import engine

ENGINE = Path(engine.__file__).parent

# library -> the only engine modules that may import it
ADAPTERS = {
    "connectorx": {"source"},
    "adbc_driver_manager": {"pg"},
    "adbc_driver_postgresql": {"pg"},
    "pandera": {"validate", "checks"},
    "duckdb": {"inspect"},
    "distributed": {"cluster"},
    "dask": {"cluster"},
    "rich": {"progress"},
    "plotly": {"htmlreport"},
    "prometheus_client": {"monitoring"},
    "opentelemetry": {"tracing"},
    "sqlglot": {"ddl", "dbcatalog_common", "dbcatalog_mysql"},
}

PUBLIC_API = [
    "ConfigError", "EXIT_CODES", "EngineError", "ErrorBudgetExceeded", "JobConfig", "JobLockedError", "LoadTarget",
    "Partition", "PartitionResult", "Plan", "RunReport", "RunStatus", "SourceError", "TargetError", "TransientError",
    "VerificationError", "WorkerLost", "check_job", "collect_garbage", "explain_job", "html_report", "inspect_shell",
    "inspect_staged", "job_status", "latest_staging", "load_config", "parse_config", "plan_job", "progress_observer",
    "publish_metrics", "render_history", "run_history", "run_demo", "run_job", "type_map_markdown",
]


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(ENGINE.glob("*.py"))}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(tree: ast.Module, runtime_only: bool = False) -> set[str]:
    """Every module imported anywhere in the file (functions included: a lazy import is still a dependency)."""
    skipped = _type_checking_lines(tree) if runtime_only else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "engine":  # from engine import pg, checkpoint
                found.update(f"engine.{alias.name}" for alias in node.names)
    return found


def test_each_library_is_imported_only_by_its_adapter() -> None:
    wrong = []
    for name, tree in _modules().items():
        for module in _imports(tree):
            library = module.split(".")[0]
            if library in ADAPTERS and name not in ADAPTERS[library]:
                wrong.append(f"engine/{name}.py imports {module} (only {sorted(ADAPTERS[library])} may)")
    assert not wrong, "\n".join(wrong)


def _engine_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        if name == "__init__":
            continue
        targets = {m.split(".")[1] for m in _imports(tree, runtime_only=True) if m.startswith("engine.")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_engine_modules_have_no_import_cycle() -> None:
    cycle = _cycle(_engine_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_shared_model_depends_on_no_stage() -> None:
    stages = {"plan", "extract", "batches", "transform", "validate", "load", "modes", "task", "pipeline", "verify",
              "checkpoint", "quarantine", "source", "pg", "catalog"}
    assert not (_engine_graph()["model"] & stages)


def test_batches_change_representation_only_in_frames() -> None:
    wrong = [f"engine/{name}.py:{node.lineno}" for name, tree in _modules().items() if name != "frames"
             for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr in ("from_arrow", "to_arrow")]
    assert not wrong, "Arrow <-> Polars conversions outside engine/frames.py: " + ", ".join(wrong)


def test_public_api_is_pinned_and_every_name_resolves() -> None:
    assert sorted(engine.__all__) == sorted(PUBLIC_API)
    for name in PUBLIC_API:
        assert getattr(engine, name) is not None, name


def test_cli_uses_only_the_public_api() -> None:
    tree = _modules()["cli"]
    internal = sorted(m for m in _imports(tree) if m.startswith("engine.")
                      and m not in ("engine.config", "engine.errors", "engine.urls"))
    assert internal == [], f"engine/cli.py imports internals: {internal}"
