"""The CLI's output piped into a reader that stops early (``durabench ls | head -1``): a quiet exit, no
traceback, while a broken pipe that is not stdout's is still an error."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.cli import run as cli_run


def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away, as head does after its lines
    stdout = open(write_end, "w")  # block-buffered, as Python's stdout on a pipe
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert cli.main(["ls", str(tmp_path)]) == cli.EXIT_STDOUT_CLOSED == 141
        print("more output after the reader left", flush=True)  # stdout now goes to /dev/null: no error at exit
    finally:
        stdout.close()
    assert capsys.readouterr().err == ""  # no traceback, no "Exception ignored" line


def test_a_broken_pipe_elsewhere_is_not_taken_for_a_closed_stdout(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    stdout = open(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)

    def broken_socket(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a server's connection, while stdout is fine

    monkeypatch.setattr(cli_run, "cmd_ls", broken_socket)
    try:
        with pytest.raises(BrokenPipeError):
            cli.main(["ls", str(tmp_path)])
    finally:
        stdout.close()
        os.close(read_end)
