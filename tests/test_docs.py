"""The documentation keeps up with the product: every SQL function the
extension registers is in docs/sql-reference.md, every public Python name in
docs/python-api.md, every CLI command in docs/cli.md, and the README carries
its two commands and the shell quick start verbatim."""
import importlib
import os
import re
import sys

import apsw
import pytest

import sqlite_ct
from sqlite_ct import cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

DEMO_COMMAND = "python3 -m pip install '.[server]' && python3 -m sqlite_ct demo"
TEST_COMMAND = "python3 -m pip install -e '.[test]' && python3 -m pytest"


def read(*parts):
    with open(os.path.join(REPO_ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def headings(text):
    """The text of every markdown heading, without the leading #s."""
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)]


def registered_sql_functions():
    conn = apsw.Connection(":memory:")
    try:
        sqlite_ct.load(conn)
        return sorted(r[0] for r in conn.execute(
            "SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'sqlite_ct_%'"))
    finally:
        conn.close()


def sync_package():
    """sqlite_ct.sync once it is a package with public names, else None."""
    try:
        module = importlib.import_module("sqlite_ct.sync")
    except ImportError:
        return None
    return module if hasattr(module, "__all__") else None


def public_python_names():
    names = [("sqlite_ct", n) for n in sqlite_ct.__all__]
    sync = sync_package()
    if sync is not None:
        names += [("sqlite_ct.sync", n) for n in getattr(sync, "__all__", [])]
    return names


def cli_commands():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return sorted(subparsers.choices)


# --- the helpers themselves ---------------------------------------------------

def test_the_lists_are_not_empty():
    # A check over an empty list could never fail.
    assert len(registered_sql_functions()) >= 15
    assert ("sqlite_ct", "create_schema") in public_python_names()
    assert "demo" in cli_commands()


# --- SQL ------------------------------------------------------------------------

@pytest.mark.parametrize("name", registered_sql_functions())
def test_every_sql_function_has_a_heading_in_the_sql_reference(name):
    # A heading of its own, e.g. "#### `sqlite_ct_version()` — innocuous",
    # not a passing mention.
    documented = [h for h in headings(read("docs", "sql-reference.md"))
                  if re.match(rf"`{re.escape(name)}\(", h)]
    assert documented, f"{name} is registered by the extension but has no heading in " \
                       f"docs/sql-reference.md"


def test_the_sql_reference_documents_no_function_that_does_not_exist():
    documented = set(re.findall(r"^#{1,6}\s+`(sqlite_ct_\w+)\(",
                                read("docs", "sql-reference.md"), re.M))
    assert documented == set(registered_sql_functions())


def test_sql_reference_flags_match_the_registration_table():
    """Each function's heading names its flags as csrc/ext.c registers them."""
    flags = {"CT_INNOCUOUS": "innocuous", "CT_DIRECT": "direct", "CT_PURE": "deterministic"}
    table = re.findall(r'\{\s*"(sqlite_ct_\w+)",\s*-?\d+,\s*(CT_\w+),',
                       read("csrc", "ext.c"))
    assert table, "the registration table of csrc/ext.c was not found"
    doc = headings(read("docs", "sql-reference.md"))
    for name, flag in table:
        heading = next(h for h in doc if h.startswith(f"`{name}("))
        assert heading.endswith(f"— {flags[flag]}"), (name, heading)


# --- Python -----------------------------------------------------------------------

@pytest.mark.parametrize("module, name", public_python_names(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_public_python_name_has_a_heading_in_the_python_api(module, name):
    text = read("docs", "python-api.md")
    documented = [h for h in headings(text) if re.match(rf"`{re.escape(name)}\b", h)]
    assert documented, f"{module}.{name} is in __all__ but has no heading in " \
                       f"docs/python-api.md"


def test_the_python_api_documents_the_sync_package_when_it_exists():
    text = read("docs", "python-api.md")
    if sync_package() is None:
        assert "`sqlite_ct.sync`" in text
    else:
        assert "## `sqlite_ct.sync`" in text
        assert "SYNC-SECTION" not in text


# --- CLI --------------------------------------------------------------------------

@pytest.mark.parametrize("command", cli_commands())
def test_every_cli_command_has_a_section_in_the_cli_doc(command):
    text = read("docs", "cli.md")
    assert command in headings(text), f"sqlite-ct {command} has no section in docs/cli.md"
    assert f"sqlite-ct {command}" in text


def test_the_cli_doc_has_no_placeholder_left():
    assert "SYNC-SECTION" not in read("docs", "cli.md")


# --- README -----------------------------------------------------------------------

@pytest.mark.parametrize("command", [DEMO_COMMAND, TEST_COMMAND])
def test_readme_carries_the_two_commands_verbatim(command):
    readme = read("README.md")
    assert f"\n{command}\n" in readme


def test_ci_runs_the_readme_test_command():
    assert TEST_COMMAND in read(".ci", "run")


def test_ci_runs_the_readme_demo_command():
    assert f'DEMO_COMMAND="{DEMO_COMMAND}"' in read(".ci", "run")
    assert 'run_readme_command "$DEMO_COMMAND"' in read(".ci", "run")


def test_readme_shell_quick_start_is_the_tested_one():
    """tests/integration/test_sqlite3_shell.py runs QUICK_START in the sqlite3
    shell and checks its output; the README must show exactly that script."""
    sys.path.insert(0, TESTS_DIR)
    try:
        shell_test = importlib.import_module("integration.test_sqlite3_shell")
    finally:
        sys.path.remove(TESTS_DIR)
    readme = read("README.md")
    assert shell_test.QUICK_START in readme
    assert shell_test.QUICK_START_OUTPUT in readme


def readme_links():
    return re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", read("README.md"))


def test_readme_links_to_the_docs_resolve():
    links = [t for t in readme_links() if t.startswith("docs/")]
    assert len(links) >= 4
    for target in links:
        assert os.path.exists(os.path.join(REPO_ROOT, target)), target


def test_readme_links_to_the_benchmark_results():
    assert "benchmarks/README.md" in readme_links()
    if not os.path.exists(os.path.join(REPO_ROOT, "benchmarks", "README.md")):
        pytest.skip("benchmarks/README.md is not written yet")
