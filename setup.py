"""Build and install sqlite-ct.

The C sources in csrc/ are built as a *plain* shared library, not a CPython
extension module: the same file must load into any SQLite host (the sqlite3
shell, apsw, Python's sqlite3, other languages), and a CPython module would
carry unresolved Py* symbols the shell cannot satisfy. It is installed as
sqlite_ct/sqlitect.so (sqlitect.dylib on macOS), a name from which SQLite
derives the entry point sqlite3_sqlitect_init, so ".load .../sqlitect" needs no
entry point argument. It is not linked against libsqlite3: the host hands the
extension its SQLite API through sqlite3ext.h.

`pip install .` puts the library into the wheel; `pip install -e .` builds it
into the source tree's sqlite_ct/ so the checkout imports as is.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 69
    from setuptools.modified import newer_group
except ImportError:  # older setuptools ship distutils
    from distutils.dep_util import newer_group

HERE = os.path.dirname(os.path.abspath(__file__))
EXT_NAME = "sqlite_ct.sqlitect"


class PrerequisiteError(Exception):
    """A tool or header the build needs is missing; the message says what to install."""


def read_version():
    """The package version, read from sqlite_ct/_version.py without importing the package."""
    path = os.path.join(HERE, "sqlite_ct", "_version.py")
    with open(path, encoding="utf-8") as f:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.M)
    if match is None:
        raise RuntimeError(f"no __version__ = '...' line in {path}")
    return match.group(1)


def read_readme():
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def library_suffix(platform=sys.platform):
    if platform == "darwin":
        return ".dylib"
    if platform.startswith(("win", "cygwin")):
        return ".dll"
    return ".so"


def compiler_search_dirs(compiler_cmd):
    """The directories `compiler_cmd` searches for #include <...>, in order.

    Asks the compiler itself (gcc and clang print the list under -E -v), so
    -I options in CFLAGS and the compiler's built-in directories both count.
    Returns [] when the compiler does not print such a list.
    """
    try:
        proc = subprocess.run(
            list(compiler_cmd) + ["-E", "-v", "-x", "c", os.devnull],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, universal_newlines=True, check=False,
        )
    except OSError:
        return []
    dirs, inside = [], False
    for line in proc.stderr.splitlines():
        if line.startswith("#include <...> search starts here"):
            inside = True
        elif line.startswith("End of search list"):
            break
        elif inside:
            # macOS clang appends " (framework directory)" to some entries.
            dirs.append(line.strip().split(" (")[0])
    return dirs


def check_prerequisites(compiler_cmd, include_dirs):
    """Fail early, naming the package to install, when the build cannot work.

    compiler_cmd: the compiler's argv prefix (e.g. ["gcc", "-pthread"]), or
    None/empty when no compiler is configured. include_dirs: every directory
    the compiler will search for headers (the project's own and the
    compiler's). Raises PrerequisiteError; returns None when all is there.
    """
    if not compiler_cmd or shutil.which(compiler_cmd[0]) is None:
        found = f"{compiler_cmd[0]!r} was not found" if compiler_cmd else "none is configured"
        raise PrerequisiteError(
            f"sqlite-ct: building the SQLite extension needs a C compiler, and {found}; "
            f"install gcc (Debian/Ubuntu: apt-get install build-essential)")
    if not any(os.path.isfile(os.path.join(d, "sqlite3ext.h")) for d in include_dirs):
        raise PrerequisiteError(
            "sqlite-ct: building the SQLite extension needs the SQLite headers "
            "(sqlite3ext.h), which were not found in " + os.pathsep.join(include_dirs)
            + "; install them (Debian/Ubuntu: apt-get install libsqlite3-dev), "
            "or point CFLAGS=-I<dir> at the directory that holds sqlite3ext.h")


class build_sqlite_extension(build_ext):
    """build_ext that links sqlite_ct.sqlitect as a plain shared library.

    Differences from a CPython extension: the file name carries no ABI tag
    (sqlitect.so, not sqlitect.cpython-311-...so), nothing is linked against
    libpython, and the prerequisites are checked first so that a missing
    compiler or header fails with the package to install instead of a
    compiler error.
    """

    def get_ext_filename(self, fullname):
        # distutils asks with the last name component ("sqlitect"),
        # setuptools' in-place copy with the full name.
        if fullname in (EXT_NAME, EXT_NAME.rpartition(".")[2]):
            return os.path.join(*fullname.split(".")) + library_suffix()
        return super().get_ext_filename(fullname)

    def _drop_python_runpath(self):
        """Python's LDSHARED may carry -Wl,-rpath,<Python's lib dir> (pyenv does);
        a library that never links libpython has no use for it."""
        libdir = sysconfig.get_config_var("LIBDIR")
        linker = getattr(self.compiler, "linker_so", None)
        if libdir and linker:
            self.compiler.set_executable(
                "linker_so", [arg for arg in linker if arg != "-Wl,-rpath," + libdir])

    def build_extension(self, ext):
        if ext.name != EXT_NAME:
            return super().build_extension(ext)
        ext_path = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(list(ext.sources) + list(ext.depends), ext_path, "newer")):
            return
        if self.compiler.compiler_type == "unix":
            compiler_cmd = list(self.compiler.compiler_so or [])
            include_dirs = list(ext.include_dirs) + list(self.include_dirs or [])
            include_dirs += compiler_search_dirs(compiler_cmd)
            try:
                check_prerequisites(compiler_cmd, include_dirs)
            except PrerequisiteError as exc:
                sys.exit(f"error: {exc}")
        self._drop_python_runpath()
        objects = self.compiler.compile(
            ext.sources,
            output_dir=self.build_temp,
            macros=ext.define_macros,
            include_dirs=ext.include_dirs,
            extra_postargs=ext.extra_compile_args,
            depends=ext.depends,
        )
        self.compiler.link_shared_object(
            objects,
            ext_path,
            extra_postargs=ext.extra_link_args,
            target_lang="c",
        )


def extension():
    sources = sorted(glob.glob("csrc/*.c"))
    compile_args = []
    if not sys.platform.startswith("win"):
        compile_args = ["-O2", "-fvisibility=hidden", "-Wall", "-Wextra"]
    return Extension(
        EXT_NAME,
        sources=sources,
        include_dirs=["csrc"],
        # A macro, not a file: the C side and the Python side read one version.
        define_macros=[("SQLITE_CT_VERSION", '"%s"' % read_version())],
        extra_compile_args=compile_args,
        # Rebuild when a header or the version changes, not only a .c file.
        depends=sorted(glob.glob("csrc/*.h")) + ["sqlite_ct/_version.py"],
    )


if __name__ == "__main__":
    setup(
        name="sqlite-ct",
        version=read_version(),
        description="SQL Server Compact-style change tracking for SQLite",
        long_description=read_readme(),
        long_description_content_type="text/markdown",
        license="MIT",
        license_files=["LICENSE"],
        keywords=["sqlite", "change tracking", "sync", "offline-first", "replication",
                  "sql server compact", "sqlite extension"],
        classifiers=[
            "Development Status :: 3 - Alpha",
            "Intended Audience :: Developers",
            "License :: OSI Approved :: MIT License",
            "Operating System :: POSIX :: Linux",
            "Operating System :: MacOS",
            "Programming Language :: C",
            "Programming Language :: Python :: 3",
            "Programming Language :: Python :: 3 :: Only",
            "Programming Language :: Python :: 3.9",
            "Programming Language :: Python :: 3.10",
            "Programming Language :: Python :: 3.11",
            "Programming Language :: Python :: 3.12",
            "Topic :: Database",
            "Topic :: Database :: Database Engines/Servers",
            "Topic :: Software Development :: Libraries :: Python Modules",
            "Typing :: Typed",
        ],
        python_requires=">=3.9",
        packages=find_packages(include=["sqlite_ct", "sqlite_ct.*"]),
        # py.typed: the package's annotations are for type checkers (PEP 561).
        package_data={"sqlite_ct": ["py.typed"]},
        # The library is not package_data: build_ext writes it into the
        # package, so a stale copy in the source tree is never shipped instead.
        ext_modules=[extension()],
        cmdclass={"build_ext": build_sqlite_extension},
        # None: the library needs only the standard library (sqlite3, ctypes).
        install_requires=[],
        # Optional dependencies. "test": everything the test suite imports or
        # runs (setuptools and wheel: the packaging test builds a wheel
        # offline). "apsw": its own SQLite, with extension loading on any
        # Python. "server": the HTTP sync service and client. "postgres": a
        # PostgreSQL hub.
        extras_require={
            "test": ["pytest", "hypothesis", "sqlite-utils", "SQLAlchemy", "alembic",
                     "datasette", "pandas", "apsw", "mypy", "rich",
                     "starlette", "uvicorn", "httpx", "psycopg[binary]>=3.1", "psycopg-pool",
                     "setuptools>=64", "wheel"],
            "apsw": ["apsw"],
            "server": ["starlette", "uvicorn", "httpx", "apsw"],
            "postgres": ["psycopg[binary]>=3.1", "psycopg-pool"],
        },
        entry_points={"console_scripts": ["sqlite-ct = sqlite_ct.cli:main"],
                      # Plugins that load the extension into the tools' connections.
                      "sqlite_utils": ["sqlite_ct = sqlite_ct.integrations.sqlite_utils"],
                      "datasette": ["sqlite_ct = sqlite_ct.integrations.datasette"]},
        zip_safe=False,
    )
