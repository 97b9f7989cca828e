"""Where data lives: a relative database path follows the config file (or the per-user data
folder), never the working directory; a path that cannot be a database is one line, status 2."""

from __future__ import annotations

from pathlib import Path

from bot.cli import main
from bot.config import load_config


def test_a_relative_database_path_follows_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "family" / "crabbot.toml"
    config.parent.mkdir()
    config.write_text('[database]\npath = "state/crabbot.db"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(config).database.path == config.parent / "state" / "crabbot.db"


def test_no_config_file_means_the_per_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config/crabbot.toml here
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_config(None).database.path == tmp_path / "xdg" / "crabbot" / "crabbot.db"
    assert load_config(None, Path("here.db")).database.path == tmp_path / "here.db"


def test_paths_that_cannot_be_a_database_get_one_line_and_status_2(tmp_path, capsys):
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("shopping list: milk, eggs\n")
    config_folder = tmp_path / "conf"
    config_folder.mkdir()
    cases = {
        ("--db", str(not_sqlite)): f"{not_sqlite}: not an SQLite database",
        ("--db", str(tmp_path)): f"{tmp_path}: is a folder",
        ("--config", str(config_folder)): f"{config_folder}: is a folder, not a config file",
        ("--db", str(tmp_path / "typo" / "c.db")): f"folder {tmp_path / 'typo'} does not exist",
    }
    for flags, message in cases.items():
        assert main(["route", *flags, "hi"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not_sqlite.read_text() == "shopping list: milk, eggs\n", "nothing is overwritten"
    assert not (tmp_path / "typo").exists()


def test_a_config_file_that_names_no_database_keeps_the_default_one(tmp_path, monkeypatch):
    """Issue 24, 11: a config added only for [admins] must not move the database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    config = tmp_path / "config" / "crabbot.toml"
    config.parent.mkdir()
    config.write_text("[admins]\ntelegram = [123456789]\n")
    default = tmp_path / "xdg" / "crabbot" / "crabbot.db"
    assert load_config(config).database.path == default
    assert load_config(None).database.path == default  # config/crabbot.toml read by default
