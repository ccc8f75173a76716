"""docs/porting-sqlce.md stays true: its Python blocks, one program run in
order in a fresh interpreter and an empty directory, run without error (their
asserts check the results they describe), and its mapping tables name every
SQL CE and Sync Services concept the porting guide promises."""
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO_ROOT, "docs", "porting-sqlce.md")


def read():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", read(), re.S)


def test_the_guide_has_examples():
    assert len(python_blocks()) >= 6


def test_every_example_runs_in_order(tmp_path):
    program = "\n".join(python_blocks()) + "\nprint('all examples ran')\n"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    env.pop("PYTHONHOME", None)
    proc = subprocess.run([sys.executable, "-c", program], cwd=str(tmp_path), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "all examples ran\n"), proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["app.db", "client.db", "hub.db"]


@pytest.mark.parametrize("concept", [
    "SqlCeClientSyncProvider", "SyncAgent", "SyncTable", "SyncDirection",
    "TableCreationOption", "SyncGroup", "SentAnchor", "ReceivedAnchor", "__sysChangeTxBsn",
    "__sysInsertTxBsn", "__sysTrackingContext", "__sysOCSDeletedRows",
    "__sysTxCommitSequence", "ApplyChangeFailed", "ConflictResolver", "ConflictType",
    "ApplyAction", "SyncStatistics", "EnableTracking", "TrackingOptions",
    "PurgeTombstoneTableData", "PurgeTransactionSequenceData", "GetLastCommittedCsn",
    "TrackingContext", "CurrentTransactionBsn", "PackTombstoneKey", "RetentionInDays",
    "AcceptChanges", "ClientId",
])
def test_the_guide_maps_the_concept(concept):
    tables = "\n".join(line for line in read().splitlines() if line.startswith("|"))
    assert concept in tables


def test_the_guide_is_linked_from_the_readme():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        assert "(docs/porting-sqlce.md)" in f.read()
