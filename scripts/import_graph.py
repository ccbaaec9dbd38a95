"""Import graph of the edgekd package: root modules, layer violations and import cycles.

Usage:  python scripts/import_graph.py [--json] [--package-dir edgekd]

Reads the source with `ast` (nothing is imported, so it runs without torch). Every `import` inside the
package counts — at module level or inside a function — except those under `if TYPE_CHECKING:`: a
function-level import that closes a cycle is still a design cycle, only a deferred one.

It prints the root modules of the package, the modules that import `edgekd.api` or `edgekd.cli`
from below them (only `edgekd/cli/` may import the façade, and nothing imports the CLI), and the
cycles: strongly connected components of the module graph with more than one module, each with one
shortest loop through it as an example. The last line is one JSON object. Exit status 1 when a
layer violation or a cycle exists (so CI can run it), 0 otherwise.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import deque
from pathlib import Path

FACADES = ("edgekd.api", "edgekd.cli")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, this: str, is_package: bool) -> set[tuple[str, ...]]:
    """What a module imports, skipping `if TYPE_CHECKING:` blocks: for each imported name the
    candidates it may resolve to, most specific first (`from a.b import c` is module `a.b.c`, or
    else attribute `c` of module `a.b`)."""
    found: set[tuple[str, ...]] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = this.split(".") if is_package else this.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.update((f"{prefix}.{alias.name}", prefix) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def build_graph(package_dir: Path) -> dict[str, set[str]]:
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for candidates in _imports(tree, name, path.name == "__init__.py"):
            target = next((c for c in candidates if c in files), candidates[-1])
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return sorted(out)


def shortest_loop(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    best: list[str] = []
    for start in component:
        parent = {start: ""}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in sorted(graph[node] & members):
                if child == start:
                    loop = [node]
                    while parent[loop[-1]]:
                        loop.append(parent[loop[-1]])
                    loop = list(reversed(loop)) + [start]
                    if not best or len(loop) < len(best):
                        best = loop
                    queue.clear()
                    break
                if child not in parent:
                    parent[child] = node
                    queue.append(child)
    return best


def facade_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, edges in sorted(graph.items()):
        if name.startswith("edgekd.cli") or name == "edgekd.__main__":
            continue
        for facade in FACADES:
            if facade == name:
                continue
            hits = sorted(e for e in edges if e == facade or e.startswith(facade + "."))
            bad.extend(f"{name} -> {hit}" for hit in hits)
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path,
                        default=Path(__file__).resolve().parent.parent / "edgekd")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    graph = build_graph(args.package_dir)
    roots = sorted(n for n in graph if n.count(".") == 1 and not (args.package_dir / n.split(".")[1]).is_dir())
    cycles = strongly_connected(graph)
    violations = facade_violations(graph)
    if not args.json:
        print(f"root modules ({len(roots)}): " + ", ".join(r.split(".", 1)[1] for r in roots))
        print(f"modules: {len(graph)}   imports: {sum(len(e) for e in graph.values())}")
        print(f"imports of edgekd.api / edgekd.cli from inside the library: {len(violations)}")
        for line in violations:
            print(f"  {line}")
        print(f"import cycles (strongly connected groups): {len(cycles)}")
        for component in cycles:
            print(f"  {len(component)} modules; e.g. " + " -> ".join(shortest_loop(graph, component)))
    print(json.dumps({"root_modules": len(roots), "modules": len(graph),
                      "facade_imports": len(violations), "cycles": len(cycles),
                      "modules_in_cycles": sum(len(c) for c in cycles)}))
    return 1 if (violations or cycles) else 0


if __name__ == "__main__":
    sys.exit(main())
