"""The layout's rules, checked on the source: dependencies point down.

Every import between the project's modules counts, the ones inside functions
too, with two exceptions: imports in an ``AppConfig.ready`` (where a higher
app registers its hooks with a lower one) and imports inside a Celery task's
body (a task calling its own app's write module).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "accounts", "services", "payments", "qr")
# Which app may import which (DESIGN §2): config ← accounts ← services ←
# payments, and accounts ← qr → services.
MAY_IMPORT = {
    "config": {"config"},
    "accounts": {"config", "accounts"},
    "services": {"config", "accounts", "services"},
    "payments": {"config", "accounts", "services", "payments"},
    "qr": {"config", "accounts", "services", "qr"},
}
# Where the apps are put together: the config package (which loads the Celery
# app, as Celery asks), the root URLconf and the WSGI/ASGI and
# Celery entry points may import any app, and nothing imports them.
COMPOSITION_ROOTS = {"config", "config.urls", "config.wsgi", "config.asgi", "config.celery"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


def _exempt_scopes(tree: ast.Module) -> set[ast.AST]:
    """Function bodies whose imports do not count: ``ready`` of an AppConfig
    and the bodies of Celery tasks (functions decorated with ``@…task``)."""
    exempt: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(b, ast.Name) and b.id == "AppConfig")
            or (isinstance(b, ast.Attribute) and b.attr == "AppConfig")
            for b in node.bases
        ):
            exempt.update(
                f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "ready"
            )
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                if name in ("task", "shared_task"):
                    exempt.add(node)
    return exempt


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name belongs to (longest match)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    exempt = _exempt_scopes(tree)
    skipped: set[ast.AST] = set()
    for scope in exempt:
        skipped.update(ast.walk(scope))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(ast.walk(node))
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import module" depends on the module; "from module
            # import name" on the module.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_project_modules() -> None:
    assert cycles(import_graph()) == []


def test_apps_import_only_the_apps_below_them() -> None:
    wrong = sorted(
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if module not in COMPOSITION_ROOTS
        and (
            target in COMPOSITION_ROOTS
            or target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
        )
    )
    assert wrong == []


def test_the_checker_sees_cycles_and_function_level_imports(tmp_path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from x import y\n"
        "def f():\n    from config import api\n"
        "class C(AppConfig):\n    def ready(self):\n        from qr import apis\n"
        "@app.task(name='t')\ndef t():\n    from qr import views\n"
    )
    modules = {"config.api": source, "qr.apis": source, "qr.views": source, "m": source}
    assert imports_of("m", source, modules) == {"config.api"}


def test_no_module_is_named_services_py() -> None:
    """ "services" means the catalog app and nothing else (CONVENTIONS)."""
    assert [p for p in project_modules().values() if p.name == "services.py"] == []
