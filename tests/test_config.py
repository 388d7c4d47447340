"""Configuration is read in one place (fhir_server/config.py): typed, documented, listed by
`python -m fhir_server config` with secrets masked, shared by the server and the commands
through the environment or a settings file."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_server.config import Settings, read_env_file

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fhir_server", "subscriptions", "profiles", "mappers")


def _env(**values: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("FHIR_SERVER_") and k != "DATABASE_URL"}
    return {**clean, **values}


def _cli(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fhir_server", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_every_setting_is_typed_and_documented():
    hints = {f.name: f.type for f in dataclasses.fields(Settings)}
    envs = [f.metadata.get("env") for f in dataclasses.fields(Settings)]
    assert all(envs) and len(set(envs)) == len(envs)
    assert all(f.metadata.get("doc") for f in dataclasses.fields(Settings))
    assert set(hints.values()) <= {"str", "int", "float", "bool"}
    readme = (REPO / "README.md").read_text("utf-8")
    assert [e for e in envs if f"`{e}`" not in readme] == []


def test_only_config_reads_the_environment():
    readers = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel == "fhir_server/config.py" or "devtools" in rel:
                continue
            if re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text("utf-8")):
                readers.append(rel)
    assert readers == []


def test_values_are_parsed_by_type(monkeypatch):
    monkeypatch.setenv("FHIR_SERVER_MAX_PAGE_SIZE", "50")
    monkeypatch.setenv("FHIR_SERVER_STRICT_PROFILES", "yes")
    monkeypatch.setenv("FHIR_SERVER_WORKER_POLL", "0.5")
    monkeypatch.setenv("FHIR_SERVER_VAR_DIR", "/tmp/elsewhere")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    s = Settings.from_env(auth_mode="off")
    assert (s.max_page_size, s.strict_profiles, s.worker_poll) == (50, True, 0.5)
    assert s.database_url == "sqlite:////tmp/elsewhere/fhir.sqlite3"
    assert s.auth_mode == "off"  # overrides win
    monkeypatch.setenv("FHIR_SERVER_STRICT_PROFILES", "maybe")
    with pytest.raises(ValueError, match="FHIR_SERVER_STRICT_PROFILES"):
        Settings.from_env()


def test_a_bad_value_stops_any_command_with_one_line():
    done = _cli("config", env=_env(FHIR_SERVER_WORKERS="four"))
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "configuration error: FHIR_SERVER_WORKERS: 'four' is not a number")
    assert "Traceback" not in done.stderr


def test_settings_file_is_read_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text(
        "# the deployment's settings\n"
        "export DATABASE_URL=postgresql+psycopg://fhir:s3cret@db.example.org:5432/fhir\n"
        "FHIR_SERVER_BASE_URL='https://fhir.example.org/fhir'\n"
        "\n"
        "FHIR_SERVER_MAX_PAGE_SIZE=200\n")
    env = _env(FHIR_SERVER_MAX_PAGE_SIZE="300")
    env.pop("FHIR_SERVER_ENV_FILE", None)  # the default: .env in the current folder
    done = _cli("config", env={**env, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {line.split("=", 1)[0]: line for line in done.stdout.splitlines() if "=" in line}
    assert lines["DATABASE_URL"].startswith(
        "DATABASE_URL=postgresql+psycopg://fhir:***@db.example.org:5432/fhir ")
    assert "s3cret" not in done.stdout
    assert f"# {Path('.env')}:" in lines["DATABASE_URL"]
    assert lines["FHIR_SERVER_BASE_URL"].startswith(
        "FHIR_SERVER_BASE_URL=https://fhir.example.org/fhir ")
    assert lines["FHIR_SERVER_MAX_PAGE_SIZE"].startswith("FHIR_SERVER_MAX_PAGE_SIZE=300 ")
    assert "# environment:" in lines["FHIR_SERVER_MAX_PAGE_SIZE"]
    assert "# default:" in lines["FHIR_SERVER_AUTH"]
    # The server reads the same file: its settings are the command's.
    os_env = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({**env, "FHIR_SERVER_ENV_FILE": str(tmp_path / ".env")})
        s = Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(os_env)
    assert s.database_url == "postgresql+psycopg://fhir:s3cret@db.example.org:5432/fhir"
    assert (s.base_url, s.max_page_size) == ("https://fhir.example.org/fhir", 300)


def test_settings_file_syntax(tmp_path):
    path = tmp_path / "settings.env"
    path.write_text('A="x y"\nB = 2 \n# c\n')
    assert read_env_file(path) == {"A": "x y", "B": "2"}
    assert read_env_file(tmp_path / "absent.env") == {}
    path.write_text("just words\n")
    with pytest.raises(ValueError, match="settings.env:1: expected NAME=value"):
        read_env_file(path)


def test_config_lists_every_setting_and_masks_secrets():
    url = "postgresql+psycopg://admin:hunter2@127.0.0.1:5432/fhir"
    done = _cli("config", env=_env(DATABASE_URL=url, FHIR_SERVER_AUTH="off"))
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout
    assert "DATABASE_URL=postgresql+psycopg://admin:***@127.0.0.1:5432/fhir" in done.stdout
    assert "FHIR_SERVER_AUTH=off" in done.stdout
    for f in dataclasses.fields(Settings):
        assert f"{f.metadata['env']}=" in done.stdout
