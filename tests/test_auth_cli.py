"""Registration CLI, config-file loading, password hashing, server keys and auth-off mode."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
from joserfc.jwk import RSAKey

import fhir_server.auth.auth_schema  # noqa: F401  (registers the auth tables)
from fhir_server.auth import bearer
from fhir_server.auth.cli import add_client, load_clients_file, register_cli
from fhir_server.auth.context import DEVELOPMENT
from fhir_server.auth.keys import forget_cached_keys, load_keys
from fhir_server.auth.passwords import hash_password, verify_password
from fhir_server.auth.registry import get_client, get_user
from fhir_server.config import Settings


def run(db, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fhir_server")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.auth_handler(args, db)


def test_users_add(database, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("a long password\n")
    assert run(database, "users", "add", "--username", "nurse", "--password-file", str(pw),
               "--practitioner", "Practitioner/n1", "--organization", "Organization/o1") == 0
    with database.read() as conn:
        user = get_user(conn, "nurse")
    assert user.fhir_user == "Practitioner/n1" and user.organization == "Organization/o1"
    assert user.password_hash.startswith("scrypt$") and "a long password" not in user.password_hash
    assert verify_password("a long password", user.password_hash)


def test_clients_add_every_kind(database, tmp_path):
    jwks = tmp_path / "jwks.json"
    key = RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True)
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    secret = tmp_path / "secret"
    secret.write_text("shh-secret")
    run(database, "clients", "add", "--client-id", "svc", "--organization", "Organization/o1",
        "--scope", "system/Task.rsu system/ServiceRequest.rs", "--jwks", str(jwks))
    run(database, "clients", "add", "--client-id", "svc-url", "--organization",
        "Organization/o1", "--scope", "system/Task.rs", "--jwks-url",
        "https://partner.example/jwks.json")
    run(database, "clients", "add", "--client-id", "conf", "--organization", "Organization/o1",
        "--scope", "launch openid user/*.rs", "--secret-file", str(secret),
        "--redirect-uri", "https://app.example/cb", "--launch-uri", "https://app.example/l")
    run(database, "clients", "add", "--client-id", "pub", "--organization", "Organization/o1",
        "--scope", "launch/patient patient/*.rs", "--public", "--redirect-uri",
        "https://app.example/cb", "--redirect-uri", "https://app.example/cb2")
    with database.read() as conn:
        svc, url, conf, pub = (get_client(conn, c) for c in ("svc", "svc-url", "conf", "pub"))
    assert svc.kind == "asymmetric" and svc.jwks["keys"][0]["kid"] == "k"
    assert svc.scope.render() == "system/Task.rus system/ServiceRequest.rs"
    assert url.jwks_url == "https://partner.example/jwks.json"
    assert conf.kind == "symmetric" and verify_password("shh-secret", conf.secret_hash)
    assert conf.launch_uri == "https://app.example/l"
    assert pub.kind == "public" and pub.redirect_uris == (
        "https://app.example/cb", "https://app.example/cb2")


def test_credentials_are_mutually_exclusive(database, tmp_path):
    with pytest.raises(SystemExit):
        run(database, "clients", "add", "--client-id", "x", "--organization",
            "Organization/o1", "--scope", "system/Task.rs", "--public", "--jwks-url",
            "https://a.example/j")


@pytest.mark.parametrize("kwargs, message", [
    ({"organization": "Practitioner/1"}, "organization"),
    ({"scope": "system/Task.rx"}, "unknown scopes"),
    ({"public": True}, "redirect-uri"),
    ({"jwks": {"nokeys": []}}, "keys"),
    ({"jwks_url": "ftp://x"}, "http"),
])
def test_add_client_validation(database, kwargs, message):
    args = {"organization": "Organization/o1", "scope": "system/Task.rs"}
    args.update(kwargs)
    if not any(k in kwargs for k in ("public", "jwks", "jwks_url")):
        args["jwks_url"] = "https://a.example/j"
    with pytest.raises(ValueError, match=message):
        add_client(database, "bad", args.pop("organization"), args.pop("scope"), **args)


def test_load_clients_file(database, tmp_path):
    (tmp_path / "s.txt").write_text("file-secret")
    config = tmp_path / "clients.json"
    config.write_text(json.dumps({"clients": [
        {"client_id": "f1", "organization": "Organization/o2", "scope": "system/Task.rs",
         "jwks_url": "https://p.example/jwks"},
        {"client_id": "f2", "organization": "Organization/o2", "scope": "user/*.rs",
         "secret_file": "s.txt", "redirect_uris": ["https://app.example/cb"]},
    ]}))
    assert load_clients_file(database, config) == ["f1", "f2"]
    with database.read() as conn:
        f2 = get_client(conn, "f2")
    assert f2.organization == "Organization/o2"
    assert verify_password("file-secret", f2.secret_hash)


def test_password_hash_properties():
    first, second = hash_password("pw-123456"), hash_password("pw-123456")
    assert first != second  # salted
    assert verify_password("pw-123456", first) and not verify_password("pw-1234567", first)
    assert not verify_password("x", "not-a-hash") and not verify_password("x", None)


def test_signing_key_created_once_and_persisted(database):
    forget_cached_keys()
    first = load_keys(database)
    forget_cached_keys()
    again = load_keys(database)
    assert first.active.kid == again.active.kid
    assert [k["kid"] for k in again.jwks()["keys"]] == [first.active.kid]


def test_auth_off_is_loud_and_explicit(database, caplog):
    bearer._warned = False
    settings = Settings(base_url="http://h/fhir", auth_mode="off")
    with caplog.at_level(logging.WARNING):
        assert bearer.authenticate({}, database, settings) is DEVELOPMENT
    assert "WITHOUT AUTHORIZATION" in caplog.text
    assert Settings().auth_mode == "on"  # never the default
