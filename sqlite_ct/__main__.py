"""`python3 -m sqlite_ct` runs the sqlite-ct command (sqlite_ct.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
