"""The architecture, read from the code: imports flow one way, no cycles, lazy imports have a reason.

These run in CI with the rest of the suite, so a move that breaks the layering, a dispatch string
or the stand-in image's module list fails here instead of in front of a user.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import cli
from bench.docker import standin
from tests.helpers.paths import REPO

PACKAGES = ("bench", "export", "reports", "locustfiles")
SHARED = {
    "bench",
    "bench.errors",
    "bench.argtypes",
    "bench.ports",
    "bench.progress",
    "bench.api_names",
    "bench.tensorflow_import",
    "bench.__main__",
}
# Layer -> the layers it may import. Imports flow downward only: shared <- payloads, store <- serving,
# target <- scenario <- commands <- cli; reports reads the store and is imported by commands alone.
ALLOWED: dict[str, set[str]] = {
    "shared": {"shared", "cli"},  # bench.__main__ runs the CLI
    "payloads": {"shared"},
    "store": {"shared"},
    "export": {"shared"},
    "serving": {"shared", "payloads"},
    "target": {"shared", "payloads"},
    "reports": {"shared", "store", "payloads"},
    "scenario": {"shared", "payloads", "store", "target"},
    "docker": {"shared", "payloads", "serving", "target"},
    "perf": {"shared", "payloads", "store", "serving", "target", "scenario", "export"},
    "commands": {"shared", "payloads", "store", "serving", "target", "scenario", "docker", "reports", "export"},
    "cli": {"shared", "payloads", "serving", "docker", "commands", "export"},
    "locustfiles": {"shared", "scenario"},
}
# What a function may import lazily: what would load TensorFlow, Locust or gevent into a process
# that does not need them (tensorflow_serving's protos import tensorflow; grpc must meet gevent's
# patching first in a Locust process).
LAZY_ALLOWED = re.compile(r"^(tensorflow|tensorflow_serving|grpc|google\.protobuf|locust|gevent|export\.network)(\.|$)")
MAX_TOP_LEVEL_MODULES = 8
MAX_LINES = 600


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool
    text: str
    commented: bool


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _module_imports(module: str, path: Path) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            lineno = 0
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
                lineno = child.lineno
            elif isinstance(child, ast.ImportFrom):
                lineno = child.lineno
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{alias.name}" for alias in child.names] or [base]
            for name in names:
                text = lines[lineno - 1]
                commented = "#" in text or _previous_import_commented(lines, lineno)
                out.append(Import(module, _resolve(name) or name, lineno, in_function, text.strip(), commented))
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def _imports() -> list[Import]:
    return [imp for module, path in MODULES.items() for imp in _module_imports(module, path)]


def _previous_import_commented(lines: list[str], lineno: int) -> bool:
    """An import in a block of lazy imports under one comment counts as commented."""
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


IMPORTS = _imports()


def layer(module: str) -> str:
    if module in SHARED:
        return "shared"
    if module == "bench.cli":
        return "cli"
    parts = module.split(".")
    return parts[1] if parts[0] == "bench" else parts[0]


def _project_edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.source and not imp.target.startswith(imp.source + "."):
            graph[imp.source].add(imp.target)
    return graph


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    graph = _project_edges()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    sys.setrecursionlimit(10000)
    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_flow_downward_between_layers() -> None:
    wrong = [
        f"{imp.source}:{imp.line} ({layer(imp.source)}) imports {imp.target} ({layer(imp.target)})"
        for imp in IMPORTS
        if imp.target in MODULES
        and layer(imp.target) != layer(imp.source)
        and layer(imp.target) not in ALLOWED[layer(imp.source)]
    ]
    assert not wrong, "\n".join(wrong)


def test_only_commands_import_reports() -> None:
    importers = {
        layer(imp.source) for imp in IMPORTS if imp.target.startswith("reports") and layer(imp.source) != "reports"
    }
    assert importers <= {"commands"}


def test_lazy_imports_keep_tensorflow_or_locust_out_and_say_so() -> None:
    lazy = [imp for imp in IMPORTS if imp.in_function]
    wrong = [f"{imp.source}:{imp.line}: {imp.text}" for imp in lazy if not LAZY_ALLOWED.match(imp.target)]
    assert not wrong, "function-level imports that keep neither TensorFlow nor Locust out:\n" + "\n".join(wrong)
    silent = [f"{imp.source}:{imp.line}: {imp.text}" for imp in lazy if not imp.commented]
    assert not silent, "lazy imports without a one-line reason:\n" + "\n".join(silent)


def test_package_shape() -> None:
    top = [m for m in MODULES if m.count(".") == 1 and m.startswith("bench.") and not (REPO / "bench" / m[6:]).is_dir()]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    for package in ("serving", "target", "payloads", "scenario", "store", "commands", "docker", "perf"):
        assert (REPO / "bench" / package / "__init__.py").is_file(), package


def _dispatch_targets() -> list[tuple[str, str, str]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    targets = []
    for command, subparser in sub.choices.items():
        handler = subparser.get_default("handler")
        module, function = getattr(handler, "target", (handler.__module__, handler.__name__))
        targets.append((command, module, function))
    return targets


@pytest.mark.parametrize(("command", "module", "function"), _dispatch_targets(), ids=lambda v: str(v))
def test_every_cli_handler_imports(command: str, module: str, function: str) -> None:
    assert callable(getattr(importlib.import_module(module), function)), f"tfsbench {command}: {module}.{function}"


def _standin_modules() -> list[str]:
    scripts = [REPO / "docker" / "standin" / name for name in ("tensorflow_model_server", "tfsbench")]
    listed = [m.group(1) for s in scripts for m in re.finditer(r"^from (\S+) import", s.read_text(), re.M)]
    return sorted({*standin.SERVER_MODULES, *listed, *standin.PROJECT_PACKAGES})


@pytest.mark.parametrize("module", _standin_modules())
def test_every_module_the_standin_image_lists_imports(module: str) -> None:
    importlib.import_module(module)
