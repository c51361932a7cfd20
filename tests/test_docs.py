"""The examples of the README and docs/ run as written.

A ``python`` block right after the line :data:`MARKER` is run in a fresh folder holding the output of
``planetcd demo demo_out`` (at ``--size 400``, to be quick), with the shared VGG-16 weights. Every page
of a workflow has one such example, so an API change that breaks the docs fails here. The ``planetcd``
lines of a ``bash`` block right after :data:`COMMANDS_MARKER` are run in order in an empty folder (other
lines, such as opening the report in a browser, are not), each to exit code 0.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from planetcd.cli import main

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- example run by tests/test_docs.py, in a folder where `planetcd demo demo_out` ran -->"
COMMANDS_MARKER = "<!-- commands run by tests/test_docs.py, in an empty folder -->"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def marked_blocks(marker: str, language: str, kind: str) -> list:
    """``pytest.param(page name, block text)`` of every ``language`` block right after ``marker``."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(re.escape(marker) + rf"\n```{language}\n(.*?)\n```", text, flags=re.S)
        assert len(blocks) == text.count(marker), f"{page.name}: a marker not followed by a {language} block"
        found += [pytest.param(page.name, block, id=f"{page.stem}-{kind}{k}") for k, block in enumerate(blocks)]
    return found


def examples() -> list:
    return marked_blocks(MARKER, "python", "")


def test_every_workflow_page_has_a_run_example():
    pages = {param.values[0] for param in examples()}
    assert {"README.md", "detect.md", "monitor.md", "segment.md"} <= pages


@pytest.fixture(scope="module")
def demo_folder(vgg_weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs") / "demo_out"
    result = CliRunner().invoke(main, ["demo", str(folder), "--size", "400", "--weights", str(vgg_weights), "-q"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("page, code", examples())
def test_example_runs(page, code, demo_folder, vgg_weights, tmp_path, monkeypatch):
    shutil.copytree(demo_folder, tmp_path / "demo_out")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLANETCD_VGG16_WEIGHTS", str(vgg_weights))
    exec(compile(code, f"{page} example", "exec"), {"__name__": "__docs__"})  # an error in the example fails here


def command_blocks() -> list:
    return marked_blocks(COMMANDS_MARKER, "bash", "bash-")


def test_the_try_it_commands_of_detect_and_monitor_are_run():
    assert {param.values[0] for param in command_blocks()} >= {"detect.md", "monitor.md"}


@pytest.mark.parametrize("page, block", command_blocks())
def test_commands_run(page, block, vgg_weights, tmp_path, monkeypatch):
    import shlex

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLANETCD_VGG16_WEIGHTS", str(vgg_weights))
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    commands = [words[1:] for words in commands if words and words[0] == "planetcd"]
    assert commands, f"{page}: no planetcd command in the block"
    for words in commands:
        result = CliRunner().invoke(main, [*words, "-q"])
        assert result.exit_code == 0, f"{page}: planetcd {' '.join(words)}\n{result.output}"
