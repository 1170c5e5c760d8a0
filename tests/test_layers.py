"""The layers the folders promise: imports run downward only, and pika stays in its one folder.

Read from the source, without importing it: what a module imports is what its ``import``
statements say, lazy imports inside functions included.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The repository's folders, by the package each installs as.
PACKAGES = {
    "rabbitry.common": ROOT / "common",
    "rabbitry.producers": ROOT / "producers",
    "rabbitry.workers": ROOT / "workers",
    "rabbitry.subscribers": ROOT / "subscribers",
    "rabbitry": ROOT / "rabbitry",
}


def modules() -> dict[str, Path]:
    """Every module of the package, by its dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """The modules ``path`` imports, each with its line: ``from a.b import c`` counts as ``a.b`` and ``a.b.c``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


ALL = modules()
UPPER = (
    "rabbitry.producers",
    "rabbitry.workers",
    "rabbitry.subscribers",
    "rabbitry.commands",
    "rabbitry.compare",
    "rabbitry.cli",
    "rabbitry.tasks",
    "rabbitry.plots",
)


def test_the_source_tree_is_read_whole():
    # A guard for the tests below: they would pass on a tree they failed to find.
    assert {
        "rabbitry.common.amqp.connection",
        "rabbitry.common.local.broker",
        "rabbitry.common.transport.contract",
        "rabbitry.workers.pool",
        "rabbitry.tasks",
    } <= set(ALL)
    assert len(ALL) > 80


@pytest.mark.parametrize("module", sorted(name for name in ALL if within(name, "rabbitry.common")))
def test_no_module_of_common_imports_from_a_layer_above_it(module):
    upward = [
        f"line {line}: {name}" for line, name in imports(ALL[module]) if any(within(name, upper) for upper in UPPER)
    ]
    assert upward == []


#: Within common: what each folder may not import (the contract knows neither transport).
SIDEWAYS = {
    "rabbitry.common.transport": (
        "rabbitry.common.amqp",
        "rabbitry.common.local",
        "rabbitry.common.logs",
        "rabbitry.common.connect",
    ),
    "rabbitry.common.amqp": ("rabbitry.common.local", "rabbitry.common.connect"),
    "rabbitry.common.local": ("rabbitry.common.amqp", "rabbitry.common.connect"),
}


@pytest.mark.parametrize("module", sorted(name for name in ALL if any(within(name, folder) for folder in SIDEWAYS)))
def test_the_contract_knows_neither_transport_and_neither_transport_knows_the_other(module):
    (folder,) = [folder for folder in SIDEWAYS if within(module, folder)]
    crossing = [
        f"line {line}: {name}"
        for line, name in imports(ALL[module])
        if any(within(name, forbidden) for forbidden in SIDEWAYS[folder])
    ]
    assert crossing == []


@pytest.mark.parametrize("module", sorted(ALL))
def test_only_the_amqp_folder_imports_pika(module):
    pika_imports = [f"line {line}: {name}" for line, name in imports(ALL[module]) if within(name, "pika")]
    if within(module, "rabbitry.common.amqp"):
        return
    assert pika_imports == []


@pytest.mark.parametrize("module", sorted(name for name in ALL if within(name, "rabbitry.common.amqp")))
def test_only_the_adapter_reaches_pikas_private_attributes(module):
    if module == "rabbitry.common.amqp.pika_internals":
        return
    reached = []
    for node in ast.walk(ast.parse(ALL[module].read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            reached.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert reached == []


#: The standard library's own privates that are its documented way to do a thing.
STDLIB_PRIVATES = {"os._exit", "sys._getframe"}


def module_level_names(tree: ast.Module) -> set[str]:
    """The names a module binds at its top level: assignments, functions and classes."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


@pytest.mark.parametrize(
    "module",
    sorted(name for name in ALL if within(name, "rabbitry.producers") or within(name, "rabbitry.workers")),
)
def test_no_producer_or_worker_module_reaches_another_objects_private_members(module):
    tree = ast.parse(ALL[module].read_text())
    own_privates = {name for name in module_level_names(tree) if name.startswith("_")}
    reached = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and (owner.id in ("self", "cls") or owner.id in own_privates):
            continue
        if ast.unparse(node) in STDLIB_PRIVATES:
            continue
        reached.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert reached == []


@pytest.mark.parametrize(
    "folder",
    [
        ROOT / "common" / "transport",
        ROOT / "common" / "amqp",
        ROOT / "common" / "local",
        ROOT / "common" / "logs",
        ROOT / "rabbitry" / "commands",
        ROOT / "rabbitry" / "compare",
        *(ROOT / name for name in ("common", "producers", "workers", "subscribers", "rabbitry")),
    ],
    ids=lambda folder: str(folder.relative_to(ROOT)),
)
def test_each_folder_opens_with_a_docstring_that_says_what_it_holds(folder):
    docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
    assert docstring and len(docstring.split()) >= 8
