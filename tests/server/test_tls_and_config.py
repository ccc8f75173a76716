"""TLS through `sqlite-ct serve --ssl-certfile/--ssl-keyfile` (a self-signed
certificate made with openssl), configuration checks with clear errors, the
verifier hook, and importing sqlite_ct without the server's dependencies."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import apsw
import httpx
import pytest

from sqlite_ct.server import (AuthenticationError, ConfigError, Identity, TokenTable,
                              create_app, load_config, running)

from .conftest import ALICE, REPO, make_hub


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serve_over_tls_with_a_self_signed_certificate(start_service, clients, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    service = start_service(ssl=(cert, key))
    assert service.url.startswith("https://")
    with pytest.raises(httpx.ConnectError):   # not trusted without the certificate
        httpx.get(service.url + "/healthz", timeout=5)
    alice = clients("alice", service.url, ALICE)
    alice.server = type(alice.server)(service.url, token=ALICE, verify=cert)
    alice.agent.server = alice.server
    alice.sync()
    assert alice.conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 2
    with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP on the TLS port
        httpx.get(service.url.replace("https", "http") + "/healthz", timeout=5)


def test_serve_refuses_half_a_tls_configuration(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sqlite_ct", "serve", "--config", "x.json",
                           "--ssl-certfile", "cert.pem"], capture_output=True, text=True,
                          cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert proc.returncode == 2
    assert "TLS needs both --ssl-certfile and --ssl-keyfile" in proc.stderr


GOOD = {"hub": "hub.db", "tables": ["notes"], "filters": {"notes": "owner = :user"},
        "tokens": {ALICE: {"user": "alice"}}}


@pytest.mark.parametrize("change, message", [
    ({"hub": None}, 'config "hub": expected the path of the hub database'),
    ({"hub_schema": "app"}, 'config "hub_schema": only a PostgreSQL hub'),
    ({"hub": "postgresql://x/y", "hub_schema": ""}, 'config "hub_schema": expected the name'),
    ({"hub": ":memory:"}, "an in-memory database cannot be shared"),
    ({"tables": []}, 'config "tables": expected a non-empty list'),
    ({"tables": ["notes", "NOTES"]}, "a table is listed twice"),
    ({"filters": {"other": "1"}}, 'table "other" is not in "tables"'),
    ({"filters": {"notes": " "}}, "expected an SQL expression"),
    ({"tokens": {"short": {"user": "a"}}}, "at least 16 characters"),
    ({"tokens": {ALICE: {"name": "a"}}}, 'expected an object with a non-empty "user"'),
    ({"tokens": {ALICE: {"user": "a", "expires": "soon"}}}, "expected a time"),
    ({"tokens": {ALICE: {"user": "a", "region": [1]}}}, "a filter parameter must be"),
    ({"tokens": None}, 'config "tokens": expected an object'),
    ({"verifier": "nowhere:thing"}, "cannot import 'nowhere:thing'"),
    ({"max_batch_size": 0}, 'config "max_batch_size": expected a positive integer'),
    ({"colour": "blue"}, "unknown configuration member 'colour'"),
])
def test_bad_configurations_are_refused_with_the_member_named(change, message):
    doc = {k: v for k, v in {**GOOD, **change}.items() if v is not None or k == "tokens"}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(doc)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text('{"hub": "h.db", "tables": ["t"], "tokens": {}}')
    assert load_config(str(tmp_path / "ok.json")).hub == str(tmp_path / "h.db")


def test_a_missing_hub_file_is_a_clear_error_and_is_not_created(tmp_path):
    with pytest.raises(ConfigError, match='config "hub": no such database file'):
        create_app({**GOOD, "hub": str(tmp_path / "typo.db")})
    assert not (tmp_path / "typo.db").exists()


def test_a_missing_hub_table_is_a_clear_error_at_start(tmp_path):
    make_hub(str(tmp_path))
    with pytest.raises(Exception, match='has no table "tasks"; create it'):
        create_app({**GOOD, "hub": str(tmp_path / "hub.db"), "tables": ["tasks"],
                    "filters": {}})


def test_the_token_table_and_a_custom_verifier(tmp_path):
    table = TokenTable({ALICE: {"user": "alice", "region": "eu"},
                        "0" * 16: {"user": "old", "expires": 1}})
    assert table(ALICE) == Identity("alice", {"region": "eu"})
    assert table("x" * 16) is None
    with pytest.raises(AuthenticationError, match="expired") as info:
        table("0" * 16)
    assert info.value.expired

    def verifier(token):
        if token == "signed-by-someone-we-trust":
            return Identity("alice")
        raise AuthenticationError("bad signature")

    make_hub(str(tmp_path))
    with running({**GOOD, "hub": str(tmp_path / "hub.db")}, verifier=verifier) as url:
        ok = httpx.get(url + "/v1/tables",
                       headers={"Authorization": "Bearer signed-by-someone-we-trust"})
        assert ok.status_code == 200 and ok.json()["tables"] == ["notes"]
        # The token table of the configuration is replaced by the verifier.
        bad = httpx.get(url + "/v1/tables", headers={"Authorization": f"Bearer {ALICE}"})
        assert (bad.status_code, bad.json()["message"]) == (401, "bad signature")


def test_provisioning_is_idempotent(tmp_path):
    make_hub(str(tmp_path))
    config = {**GOOD, "hub": str(tmp_path / "hub.db")}
    for _ in range(2):
        with running(config) as url:
            assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    hub = apsw.Connection(str(tmp_path / "hub.db"))
    assert hub.execute("SELECT count(*) FROM __sysOCSTrackedObjects").fetchone()[0] == 1


def test_importing_sqlite_ct_does_not_import_the_server_dependencies():
    code = ("import sys, sqlite_ct, sqlite_ct.sync, sqlite_ct.sync.wire, sqlite_ct.cli; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=60, check=True)
    assert out.stdout.strip() == "[]"
