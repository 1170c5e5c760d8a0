"""The docs say what the code is: their examples import what ``rabbitry`` exports, the files and
modules they cite exist, and the API page lists every public name.

A doc example is code, so it is read as code here: every ``python`` block of README.md and
docs/*.md must parse, import from ``rabbitry`` alone (an application sees nothing else as
stable), and use only names of ``rabbitry.__all__``; so must the examples in the package's
docstrings, which help() shows. A library an example imports comes with rabbitry, or the page
says to ``pip install`` it. The README's quickstart activates its virtual environment before it
runs a command, queues only tasks it defines or that are built in, and every schedule a page
shows passes ``rabbitry schedule --check``. Nothing here needs a broker.
"""

import ast
import functools
import importlib
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import rabbitry

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: The repository's top-level folders: a path the docs cite that starts with one is checked.
CITED_FOLDERS = ("common", "producers", "workers", "subscribers", "rabbitry", "tests", "bench", "monitoring", "docs")
#: Folders the docs name that are made by a run, not kept in the repository.
MADE_BY_A_RUN = {"bench/results/"}
#: The subpackages and modules of ``rabbitry``: a dotted name that starts with one names code.
SUBMODULES = ("common", "producers", "workers", "subscribers", "commands", "compare", "cli", "task", "plots")

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: The application the examples stand for: the reader's own package, as in "# myapp/tasks.py".
READERS_APPLICATION = "myapp"
#: The commands ``pip install`` puts into a virtual environment's bin/.
INSTALLED_COMMANDS = ("worker", "new-task", "emit-log", "subscribe", "rabbitry")
CITED_PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(CITED_FOLDERS)})/[\w./*-]*)")
DOTTED_NAME = re.compile(rf"(?<![\w.])rabbitry\.((?:{'|'.join(SUBMODULES)})(?:\.\w+)*)")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def page_id(page: Path) -> str:
    """A page's name in test ids: README.md, docs/api.md, ..."""
    return str(page.relative_to(ROOT))


@functools.cache
def tracked_files() -> frozenset[str]:
    """Every file of the repository, as git knows it (nothing ignored, nothing made by a run)."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return frozenset(listed.stdout.split())


def python_blocks(page: Path) -> list[str]:
    """The source of each fenced ``python`` block of a page."""
    return PYTHON_BLOCK.findall(page.read_text())


def imports_of(source: str) -> list[tuple[str, list[str]]]:
    """Each import of a block: the module, and the names taken from it (none for ``import x``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def attributes_of_rabbitry(source: str) -> list[str]:
    """The names a block reaches as ``rabbitry.<name>`` after ``import rabbitry``."""
    return [
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rabbitry"
    ]


def exists(path: str, files: frozenset[str]) -> bool:
    """Whether a cited path (a file, a folder ending in /, or a glob) names something tracked."""
    path = path.rstrip(".")
    if "*" in path:
        pattern = re.compile(re.escape(path).replace(r"\*", r"[^/]*"))
        return any(pattern.fullmatch(name) for name in files)
    if path.endswith("/"):
        return any(name.startswith(path) for name in files)
    return path in files or any(name.startswith(path + "/") for name in files)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_python_example_parses_and_imports_from_rabbitry_alone(page):
    public = set(rabbitry.__all__)
    wrong = []
    for block in python_blocks(page):
        for module, names in imports_of(block):
            if module.startswith("rabbitry."):
                wrong.append(f"imports {module}: import from rabbitry only")
            elif module == "rabbitry":
                wrong += [
                    f"imports {name} from rabbitry, which does not export it" for name in names if name not in public
                ]
        wrong += [
            f"uses rabbitry.{name}, which rabbitry does not export"
            for name in attributes_of_rabbitry(block)
            if name not in public
        ]
    assert not wrong, wrong


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_a_page_cites_exists(page):
    files = tracked_files()
    cited = set(CITED_PATH.findall(page.read_text()))
    missing = sorted(path for path in cited - MADE_BY_A_RUN if not exists(path, files))
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_page_a_page_links_to_exists(page):
    files = tracked_files()
    missing = []
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        path = (page.parent / target).resolve().relative_to(ROOT).as_posix()
        if not exists(path if "." in Path(path).name else path + "/", files):
            missing.append(target)
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_module_a_page_names_can_be_imported(page):
    missing = []
    for dotted in sorted(set(DOTTED_NAME.findall(page.read_text()))):
        parts = dotted.split(".")
        # The longest prefix that imports is the module; the rest are attributes of it.
        for cut in range(len(parts), 0, -1):
            try:
                value = importlib.import_module("rabbitry." + ".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attribute in parts[cut:]:
                    value = getattr(value, attribute)
            except AttributeError:
                missing.append(f"rabbitry.{dotted}")
            break
        else:
            missing.append(f"rabbitry.{dotted}")
    assert not missing, missing


def public_table() -> set[str]:
    """The names in the table of docs/api.md's section "What is public"."""
    section = (ROOT / "docs" / "api.md").read_text().split("## What is public", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}


def test_the_api_page_lists_every_public_name_and_no_other():
    table = public_table()

    assert sorted(set(rabbitry.__all__) - table) == [], "exported, but not in docs/api.md's table"
    assert sorted(table - set(rabbitry.__all__)) == [], "in docs/api.md's table, but not exported"


def test_the_readme_layout_names_every_folder_of_the_repository():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([\w./-]+/)`", layout, re.MULTILINE))
    folders = {str(Path(name).parent) + "/" for name in tracked_files() if "/" in name}
    # Every top-level folder, and every folder of common/ and rabbitry/, has its own row.
    expected = {
        folder for folder in folders if folder.count("/") == 1 or folder.split("/")[0] in ("common", "rabbitry")
    }

    assert sorted(expected - named) == [], "folders missing from README.md's layout table"
    assert sorted(named - folders) == [], "folders in README.md's layout table that are not in the repository"


def readme_section(title: str) -> str:
    """The text of README.md's section ``## title``, up to the next section."""
    return (ROOT / "README.md").read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def tasks_defined(source: str) -> set[str]:
    """The names of the functions a block declares as tasks with ``@task`` or ``@task(...)``."""
    defined = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                called = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(called, ast.Name) and called.id == "task":
                    defined.add(node.name)
    return defined


def tasks_named(text: str) -> set[str]:
    """The tasks a text queues: ``--task NAME``, a schedule's ``task = "NAME"``, ``NAME.delay(...)``."""
    return (
        set(re.findall(r"--task[ =](\w+)", text))
        | set(re.findall(r'^task = "(\w+)"', text, re.MULTILINE))
        | set(re.findall(r"(\w+)\.(?:delay|send|send_with_options|delay_async)\(", text))
    )


def test_the_readme_quickstart_queues_only_tasks_it_defines_or_that_are_built_in():
    from rabbitry.workers import builtin_tasks
    from rabbitry.workers.registry import registry

    quickstart = readme_section("Quickstart")
    defined = {name for block in PYTHON_BLOCK.findall(quickstart) for name in tasks_defined(block)}
    built_in = {registered.name for registered in registry if registered.function.__module__ == builtin_tasks.__name__}

    named = tasks_named(quickstart)
    assert named, "the quickstart queues no task?"
    assert sorted(named - defined - built_in) == [], "tasks the quickstart queues that nothing defines"


def test_the_readme_activates_its_virtual_environment_before_running_a_command_by_its_bare_name():
    readme = (ROOT / "README.md").read_text()
    activation = re.search(r"^.*(?:\. |source )\.venv/bin/activate", readme, re.MULTILINE)
    bare = re.search(rf"^(?:{'|'.join(INSTALLED_COMMANDS)}) ", "\n".join(SHELL_BLOCK.findall(readme)), re.MULTILINE)

    assert bare is not None
    assert activation is not None, "README.md runs the commands by their bare names, but never activates .venv"
    first_bare_line = bare.group(0)
    assert activation.start() < readme.index("\n" + first_bare_line), "README.md activates .venv too late"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_schedule_a_page_shows_passes_rabbitry_schedule_check(page, tmp_path):
    from click.testing import CliRunner

    from rabbitry.cli import rabbitry as rabbitry_command

    schedules = [block for block in TOML_BLOCK.findall(page.read_text()) if "[[entry]]" in block]
    for number, block in enumerate(schedules):
        path = tmp_path / f"schedule-{number}.toml"
        path.write_text(block)
        result = CliRunner().invoke(rabbitry_command, ["schedule", "--check", str(path)])
        assert result.exit_code == 0, (block, result.output)


def installed_with_rabbitry() -> set[str]:
    """The import names of rabbitry's own dependencies (their distributions' names, normalised)."""
    required = metadata.requires("rabbitry") or []
    names = {
        re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        for requirement in required
        if "extra ==" not in requirement
    }
    return {name.lower().replace("-", "_") for name in names}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_library_an_example_imports_comes_with_rabbitry_or_the_page_says_to_pip_install_it(page):
    text = page.read_text()
    known = {"rabbitry", READERS_APPLICATION, *sys.stdlib_module_names, *installed_with_rabbitry()}
    imported = {module.split(".")[0] for block in python_blocks(page) for module, _names in imports_of(block)}

    unnamed = sorted(name for name in imported - known if f"pip install {name}" not in text)
    assert unnamed == [], "libraries an example imports that neither rabbitry installs nor the page names"


#: The package's source folders: their docstrings' examples are read as the docs' are.
SOURCE_FOLDERS = ("rabbitry", "common", "producers", "workers", "subscribers")
#: An import of an internal module, in an example (``>>>`` prompt or not).
INTERNAL_IMPORT = re.compile(r"^\s*(?:>>> )?(?:from (rabbitry\.[\w.]+) import|import (rabbitry\.[\w.]+))", re.MULTILINE)


def docstrings(path: Path) -> list[str]:
    """The docstrings of a module, its classes and its functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node)
            if docstring:
                found.append(docstring)
    return found


def test_every_example_in_a_docstring_imports_from_rabbitry_alone():
    # help() and the source show these examples too: the same rule as the docs' own.
    wrong = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for docstring in docstrings(path):
                for match in INTERNAL_IMPORT.finditer(docstring):
                    wrong.append(f"{path.relative_to(ROOT)}: imports {match.group(1) or match.group(2)}")
    assert wrong == [], "examples that import internal modules: import from rabbitry only"
