"""The package as a user gets it: `pip wheel .` builds a wheel that installs
into a clean venv (no apsw, no cffi: no hard dependencies) and works there, with
this machine's python3 and with Debian's /usr/bin/python3; a source checkout
without a built library uses the installed one; the metadata carries the
licence, the classifiers and the extras; the error for an unbuilt, uninstalled
checkout says what to run."""
import email
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import sqlite_ct
from sqlite_ct._version import __version__

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"
SOURCE_FILES = ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"]


def copy_source(dest):
    """The files a clone has, without any build output (no sqlitect.so)."""
    os.makedirs(dest)
    for name in SOURCE_FILES:
        shutil.copy(os.path.join(REPO_ROOT, name), dest)
    shutil.copytree(os.path.join(REPO_ROOT, "csrc"), os.path.join(dest, "csrc"))
    shutil.copytree(os.path.join(REPO_ROOT, "sqlite_ct"), os.path.join(dest, "sqlite_ct"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.dylib", "*.dll"))
    return dest


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(argv, cwd, timeout=300):
    proc = subprocess.run([str(a) for a in argv], cwd=str(cwd), env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def can_build_offline():
    try:
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return copy_source(str(tmp_path_factory.mktemp("clone") / "sqlite-ct"))


@pytest.fixture(scope="module")
def wheel_file(source, tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    # Offline when this interpreter has the build requirements; else pip
    # fetches them (build isolation), as `pip install .` does.
    isolation = ["--no-build-isolation"] if can_build_offline() else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", dist, "."],
        cwd=source)
    wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(dist, wheels[0])


def venv_with_wheel(python, wheel_path, where):
    """A fresh venv made by `python`, with only the wheel installed (offline)."""
    run([python, "-m", "venv", where], cwd=os.path.dirname(where))
    venv_python = os.path.join(where, "bin", "python")
    run([venv_python, "-m", "pip", "install", "--no-index", "--no-deps", wheel_path],
        cwd=where)
    return venv_python


def test_the_wheel_carries_the_library_the_types_and_the_licence(wheel_file):
    with zipfile.ZipFile(wheel_file) as whl:
        names = whl.namelist()
        dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
        metadata = email.message_from_bytes(whl.read(f"{dist_info}/METADATA"))
    assert "sqlite_ct/sqlitect.so" in names
    assert "sqlite_ct/py.typed" in names
    assert "sqlite_ct/sync/agent.py" in names
    assert any(n.startswith(dist_info) and n.endswith("/LICENSE") for n in names)
    assert metadata["Name"] == "sqlite-ct"
    assert metadata["Version"] == __version__
    assert metadata["License"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata["Keywords"]
    classifiers = metadata.get_all("Classifier")
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert "Typing :: Typed" in classifiers
    assert set(metadata.get_all("Provides-Extra")) >= {"apsw", "server", "postgres", "test"}
    # No hard dependency: every requirement belongs to an extra.
    requirements = metadata.get_all("Requires-Dist") or []
    assert requirements and all("extra ==" in r for r in requirements), requirements
    assert 'apsw; extra == "apsw"' in requirements


def test_the_wheel_works_in_a_clean_venv_without_apsw(wheel_file, source, tmp_path):
    python = venv_with_wheel(sys.executable, wheel_file, str(tmp_path / "venv"))
    site = run([python, "-c", "import sqlite_ct, os; "
                "print(os.path.dirname(sqlite_ct.__file__))"], cwd=tmp_path).strip()
    assert site.startswith(str(tmp_path / "venv"))
    out = run([python, "-c", "import importlib.util as u; "
               "print(u.find_spec('apsw'), u.find_spec('cffi'))"], cwd=tmp_path)
    assert out.split() == ["None", "None"]
    demo = run([python, "-m", "sqlite_ct", "demo"], cwd=tmp_path)
    assert "all three databases are equal" in demo
    assert demo.rstrip().endswith("done.")
    # The console script too.
    assert run([str(tmp_path / "venv" / "bin" / "sqlite-ct"), "--version"],
               cwd=tmp_path).strip() == f"sqlite-ct {__version__}"


def test_a_source_checkout_uses_the_installed_library(wheel_file, source, tmp_path):
    """`pip install . && python3 -m sqlite_ct demo` from the clone: Python
    imports the unbuilt sqlite_ct/ of the current directory, which finds the
    library of the installed distribution."""
    python = venv_with_wheel(sys.executable, wheel_file, str(tmp_path / "venv"))
    assert not os.path.exists(os.path.join(source, "sqlite_ct", "sqlitect.so"))
    printed = run([python, "-c", "import sqlite_ct; print(sqlite_ct.__file__); "
                   "print(sqlite_ct.loadable_path())"], cwd=source).split("\n")
    assert printed[0] == os.path.join(source, "sqlite_ct", "__init__.py")
    assert printed[1].startswith(str(tmp_path / "venv"))
    assert printed[1].endswith("/sqlite_ct/sqlitect.so")
    demo = run([python, "-m", "sqlite_ct", "demo"], cwd=source)
    assert "all three databases are equal" in demo


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON}")
def test_the_wheel_works_with_debians_python(wheel_file, source, tmp_path):
    """Debian's python3 loads extensions with enable_load_extension()."""
    tag = os.path.basename(wheel_file).split("-")[2]
    system_tag = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True, text=True, check=True).stdout.strip()
    if tag != system_tag:
        pytest.skip(f"the wheel is for {tag}, {SYSTEM_PYTHON} is {system_tag}")
    python = venv_with_wheel(SYSTEM_PYTHON, wheel_file, str(tmp_path / "venv"))
    demo = run([python, "-m", "sqlite_ct", "demo"], cwd=source)
    assert "all three databases are equal" in demo


def test_an_unbuilt_checkout_without_an_installed_copy_says_what_to_run(tmp_path):
    source = copy_source(str(tmp_path / "sqlite-ct"))
    # -S: no site-packages, so no installed sqlite-ct can be found.
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import sqlite_ct; sqlite_ct.loadable_path()"],
        cwd=source, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"sqlite_ct.errors.ExtensionError: sqlite-ct: the compiled extension sqlitect.so "
        f"is not in {os.path.join(source, 'sqlite_ct')} (a source tree that was not "
        f"built), and sqlite-ct is not installed; build it in place with "
        f"`python3 -m pip install -e .` (needs a C compiler and SQLite's headers: "
        f"apt-get install gcc libsqlite3-dev), or install sqlite-ct with "
        f"`python3 -m pip install .` and run Python outside the source tree")



def test_an_installed_copy_of_another_version_is_not_used(tmp_path):
    """Its library would fail load()'s version check; the error names both versions."""
    source = copy_source(str(tmp_path / "sqlite-ct"))
    site = tmp_path / "site"
    dist_info = site / "sqlite_ct-9.9.9.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: sqlite-ct\nVersion: 9.9.9\n")
    (dist_info / "RECORD").write_text("sqlite_ct/sqlitect.so,,\n")
    (site / "sqlite_ct").mkdir()
    shutil.copy(sqlite_ct.loadable_path(), site / "sqlite_ct" / "sqlitect.so")
    script = (f"import sys; sys.path.append({str(site)!r}); import sqlite_ct; "
              f"sqlite_ct.loadable_path()")
    proc = subprocess.run([sys.executable, "-S", "-c", script], cwd=source, env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"sqlite_ct.errors.ExtensionError: sqlite-ct: the compiled extension sqlitect.so is "
        f"not in {os.path.join(source, 'sqlite_ct')}, and the installed sqlite-ct is "
        f"version 9.9.9, not {__version__}; build it in place with ")
