"""Helpers shared by the tests of the command line and of golden files."""

import json

from refimpl.cli import main


def run_cli(capsys, *argv):
    """``refimpl ARGV...`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_json(path, data):
    """``data`` as JSON at ``path``; returns ``path``."""
    path.write_text(json.dumps(data))
    return path
