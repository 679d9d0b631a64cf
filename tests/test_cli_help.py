"""``--help`` of every command and subcommand explains each option and shows an example that
this very CLI parses (issue 12)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from collections.abc import Iterator

import pytest

from gateway.cli import build_parser, main
from tests.support import gateway_command


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the CLI with its command path, the top level first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


ALL = [path for path, _ in commands(build_parser())]


def test_the_walk_finds_every_command() -> None:
    assert {" ".join(p) for p in ALL} >= {
        "",
        "serve",
        "check-config",
        "demo",
        "init",
        "master-key",
        "keys",
        "keys create",
        "keys list",
        "keys rotate",
        "keys revoke",
        "relationships",
        "relationships grant",
        "relationships revoke",
        "tokens",
        "tokens member",
        "signing-key",
    }


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "gateway")
def test_help_explains_every_option_and_shows_an_example(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    parser = dict(commands(build_parser()))[path]
    assert parser.description, "no description"
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # each subcommand has a summary line
                assert choice.help, choice.dest
                assert choice.help in " ".join(text.split())
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{name} has no help"
        assert name in text or str(action.metavar or "") in text
    examples = [
        line.strip()
        for line in text.split("example", 1)[-1].splitlines()
        if line.strip().startswith("gateway ")
    ]
    assert examples, "no example"
    for example in examples:
        argv = shlex.split(example)[1:]
        assert tuple(argv[: len(path)]) == path, example  # an example of this command
        build_parser().parse_args(argv)  # and one the CLI accepts as written


def test_the_installed_entry_point_shows_the_same_help() -> None:
    result = subprocess.run(
        gateway_command("keys", "create", "--help"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--test" in result.stdout and "sk_test_" in result.stdout
    assert "gateway keys create --config config/gateway.yaml" in result.stdout


def test_version_is_the_packages() -> None:
    from gateway import __version__

    result = subprocess.run(
        gateway_command("--version"), capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == f"gateway {__version__}\n"
