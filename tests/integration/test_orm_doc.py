"""docs/orm.md runs as written: every code block, in order, in one directory.

Each fenced block is preceded by a marker:
    <!-- file: PATH -->  the block is written to PATH
    <!-- run -->         a Python block, run in a fresh interpreter; every
                         print(...) line carries its expected output as a
                         `# ...` comment, and the output must match
    <!-- shell -->       a console block: each `$ ` line runs in bash, and the
                         lines below it (if any) are its expected output
The package's entry points are on the path (the metadata setup.py writes), as
in an installed package, so the tools find the plugins by themselves.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from ._support import PACKAGE_PARENT, describe

DOC = os.path.join(PACKAGE_PARENT, "docs", "orm.md")
MARKED = re.compile(r"<!-- (?:file: (?P<path>\S+)|(?P<kind>run|shell)) -->\n"
                    r"```(?P<lang>\w+)\n(?P<body>.*?)^```", re.S | re.M)
PRINTED = re.compile(r"^\s*print\(.*\)  # (?P<out>.*)$", re.M)
TOOLS = ("alembic", "sqlite-utils", "datasette")


def blocks():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return text, list(MARKED.finditer(text))


def test_every_code_block_of_the_guide_is_marked():
    text, marked = blocks()
    fences = re.findall(r"^```\w+$", text, re.M)
    assert len(marked) == len(fences) >= 10


def test_the_guide_runs_as_written(tmp_path):
    for name in ("sqlalchemy", "alembic", "sqlite_utils", "datasette", "pandas"):
        pytest.importorskip(name, reason=f"{name} is not installed")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or not os.path.exists(os.path.join(PACKAGE_PARENT, "setup.py")):
        pytest.skip(f"needs a source checkout and the tools' commands ({missing} missing)")
    meta = tmp_path / "meta"
    meta.mkdir()
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(meta)],
                   cwd=PACKAGE_PARENT, check=True, capture_output=True, timeout=120)
    work = tmp_path / "guide"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(meta), PACKAGE_PARENT]))
    env.pop("PYTHONHOME", None)

    def run(argv, where):
        proc = subprocess.run(argv, cwd=work, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"{where}\n{describe(proc)}"
        return proc.stdout

    _, marked = blocks()
    for number, block in enumerate(marked, 1):
        body = block["body"]
        where = f"docs/orm.md block {number}"
        if block["path"]:
            target = work / block["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        elif block["kind"] == "run":
            out = run([sys.executable, "-c", body], where)
            assert out.splitlines() == [m["out"] for m in PRINTED.finditer(body)], where
        else:
            commands = re.split(r"^\$ ", body, flags=re.M)[1:]
            assert commands, where
            for command in commands:
                line, _, expected = command.partition("\n")
                out = run(["bash", "-c", line], f"{where}: {line}")
                if expected.strip():
                    assert out.strip() == expected.strip(), f"{where}: {line}"
