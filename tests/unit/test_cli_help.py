"""The command line teaches: --help lists commands, every config key, an example and the exit codes."""

from __future__ import annotations

from tests.conftest import run_cli


def test_help_lists_commands_example_and_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ("run", "plan", "check", "status", "inspect", "demo", "[source]", "exit codes", "65"):
        assert word in result.stdout


def test_run_help_lists_every_config_key() -> None:
    out = run_cli("run", "--help").stdout
    for key in ("partition_on", "rows_per_partition", "max_error_rate", "batch_rows", "queue_depth", "staging_dir"):
        assert key in out


def test_config_error_exits_2_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Both problems echo the target URL (one the URL itself, one the section holding it): the password,
    given through ${VAR}, must be masked in each."""
    path = tmp_path / "bad.toml"
    path.write_text('[job]\nname = "x"\n[source]\nurl = "sqlite:///tmp/none.db"\ntable = "t"\n'
                    '[target]\nurl = "mysql://u:${ENGINE_TEST_PW}@h/d"\ntable = "t"\nmode = "upsert"\n')
    result = run_cli("run", str(path), env={"ENGINE_TEST_PW": "topsecret"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "`target.key` is required" in result.stderr
    assert "the target must be PostgreSQL" in result.stderr
    assert result.stderr.count("mysql://u:***@h/d") == 2, result.stderr  # the URL was shown, masked
    assert "topsecret" not in result.stderr + result.stdout
