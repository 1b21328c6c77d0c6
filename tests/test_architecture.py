"""ARCHITECTURE.md, checked where a test can check it: the import graph has no circles (its data
flow runs one way), the model package stands alone, the leaves it names are leaves, its Modules table
names every module and nothing that is not there, and no function runs over 60 lines.

Every import counts, at module level, inside a function or under ``if TYPE_CHECKING:`` (a circle of
type-only imports is still a circle for a reader). Importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__`` first, so a module depends on the packages above what it imports too.
"""

import ast
import re
from pathlib import Path

import prism_lm

PACKAGE = Path(prism_lm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST):
    """Every import node of a module, wherever it stands."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "hf_code" not in p.parts}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # the target and every package above it
                    dep = ".".join(parts[:i])
                    if dep in files and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_model_package_knows_nothing_of_training_or_files():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("prism_lm.model"):
            allowed = ("prism_lm", "prism_lm.errors")
            outside = {d for d in deps if not d.startswith("prism_lm.model") and d not in allowed}
            assert not outside, (name, outside)


ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"


def test_the_leaves_architecture_names_import_nothing_of_the_package_but_errors():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    sentence = re.search(r"The leaves are (.*?)\.\s", text, flags=re.S).group(1)
    leaves = ["prism_lm." + path.removesuffix(".py").replace("/", ".") for path in re.findall(r"`([\w/]+\.py)`",
                                                                                             sentence)]
    graph = import_graph()
    assert len(leaves) >= 5
    for leaf in leaves:
        assert graph[leaf] <= {"prism_lm", "prism_lm.errors"}, (leaf, graph[leaf])


def test_the_modules_table_names_every_module_and_only_modules_that_exist():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    named = {p for row in table.splitlines() if row.startswith("| `")
             for p in re.findall(r"`([\w/.]+)`", row.split("|")[1])}
    for path in named:
        assert (PACKAGE / path).exists() or (PACKAGE.parent / path).exists(), f"ARCHITECTURE.md names {path}"
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" and "hf_code" not in p.parts and p.name != "__main__.py"}
    covered = {m for m in modules if m in named or any(m.startswith(d) for d in named if d.endswith("/"))}
    assert sorted(modules - covered) == []


def test_no_function_runs_over_60_lines():
    """In the package, the benchmark scripts and the tests alike (a benchmark's main grew to 66 once)."""
    long = []
    for root in (PACKAGE, PACKAGE.parent / "benchmarks", PACKAGE.parent / "tests"):
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert long == []
