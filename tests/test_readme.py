"""The README's examples run as written: every `tidian …` command line in its code blocks is
one the command line accepts, and the Python API example runs as a script (with its sizes
made small: fewer epochs and seeds)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tidian.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced code block."""
    blocks, language, lines = [], None, []
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip() or "text", []
            else:
                blocks.append((language, "\n".join(lines)))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def _command_lines() -> list[str]:
    out = []
    for language, text in _blocks():
        if language not in ("bash", "sh", "console"):
            continue
        for line in text.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("tidian "):
                out.append(line)
    return out


def _argv(line: str) -> list[str]:
    """A synopsis line as arguments: optional parts ``[…]`` kept, of alternatives ``a|b`` and
    ``--x 1 | --y 2`` the first."""
    tokens = shlex.split(line.replace("[", " ").replace("]", " "))[1:]
    argv, skip = [], 0
    for token in tokens:
        if skip:
            skip -= 1
            continue
        if token == "|":
            skip = 2  # the other alternative: an option and its value
            continue
        argv.append(token.split("|")[0] if not token.startswith("http") else token)
    return argv


def test_the_readme_shows_command_lines_to_check():
    lines = _command_lines()
    assert len(lines) >= 20
    assert any(line.startswith("tidian evaluate --task iris") for line in lines)


@pytest.mark.parametrize("line", _command_lines())
def test_every_readme_command_line_is_accepted(line, capsys):
    with pytest.raises(SystemExit) as done:
        main([*_argv(line), "--help"])  # options and subcommands parsed, nothing run
    printed = capsys.readouterr()
    assert done.value.code == 0, (line, printed.err)
    assert "Usage:" in printed.out


@pytest.mark.slow
def test_the_python_api_example_runs_as_a_script(tmp_path):
    python = [text for language, text in _blocks() if language == "python"]
    example = next(text for text in python if "def main()" in text and "__main__" in text)
    small = re.sub(r'"epochs": \d+', '"epochs": 1', example)
    small = re.sub(r"seeds=\d+", "seeds=2", small)
    assert small.count('"epochs": 1') >= 3 and small.count("seeds=2") == 2  # sizes only
    script = tmp_path / "example.py"
    script.write_text(small)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    printed = done.stdout.splitlines()
    assert len(printed) == 4  # score, cost, both evaluations, the comparison: once each
    assert "accuracy" in printed[0] and "latency" in printed[1]
    assert (tmp_path / "out" / "cnn" / "model.safetensors").exists()
