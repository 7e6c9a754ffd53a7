"""The README and docs/ show what works: every `python -m study.<command>` line of their code blocks is a real
command whose real `--help` (the subcommand's, for `bench`, `bundle` and `models`) names every flag on the line;
every `make <target>` is a target of the Makefile; every relative link leads to a file and a heading that exist;
and the README's quick start shows the two commands and the smoke study, whose line `tests/test_study.py`'s
smoke study runs (`readme_smoke_argv`)."""

from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from studytools import run_cli

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(?:```|~~~)\s*(\w*)")
SHELL = {"", "bash", "sh", "shell", "console", "zsh"}  # the fences whose lines are commands (not text, python)
STUDY_COMMAND = re.compile(r"python[\d.]*\s+-m\s+study\.(\w+)(.*)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
SEGMENT_END = re.compile(r"\s(?:&&|\|\||\||;)\s|;\s*$")  # a shell operator ends the command
MAKE = re.compile(r"(?:^|&&|\|\||;)\s*make\s+([^\s=]+)(?=\s|$)")


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line of a shell code block (```bash or a bare fence), continuation lines
    (`\\`) joined, shell comments (`#` after a blank, outside quotes) cut off."""
    lines, inside, shell, pending, start = [], False, False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fence := FENCE.match(line):
            inside, pending = not inside, ""
            shell = inside and fence.group(1) in SHELL
            continue
        if not shell:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, strip_comment(pending + line)))
        pending = ""
    return lines


def strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


@dataclass(frozen=True)
class Shown:
    """One `python -m study.<module> [sub] ...` as a document shows it."""

    where: str
    line: str
    module: str
    first: str | None  # the first word after the module, a subcommand where the command has some
    flags: tuple[str, ...]


def shown_commands() -> list[Shown]:
    shown = []
    for path in DOCUMENTS:
        for number, line in code_lines(path):
            for match in (m for segment in SEGMENT_END.split(line) if (m := STUDY_COMMAND.search(segment))):
                rest = match.group(2)
                words = [w.strip("'\"") for w in rest.split()]
                first = words[0] if words and not words[0].startswith(("-", "[")) else None
                shown.append(Shown(f"{path.relative_to(REPO)}:{number}", line.strip(), match.group(1), first,
                                   tuple(FLAG.findall(rest))))
    return shown


@cache
def help_text(module: str, sub: str | None = None) -> str:
    """The real `python -m study.<module> [sub] --help`, hyphenated line breaks joined (argparse wraps
    `--system-site-packages` as `--system-site-` + `packages`)."""
    result = run_cli(f"study.{module}", *([sub] if sub else []), "--help", timeout=120)
    assert result.returncode == 0, f"python -m study.{module} {sub or ''} --help failed:\n{result.stderr[-2000:]}"
    return re.sub(r"-\n\s+", "-", result.stdout)


def subcommands(module: str) -> set[str]:
    """A command's subcommands, from the `{a,b,c}` of its usage line; empty for a command without any."""
    usage = help_text(module).split("\n\n")[0]
    found = re.search(r"\{([\w,-]+)\}", usage)
    return set(found.group(1).split(",")) if found else set()


def readme_quick_start() -> list[str]:
    """The lines of the first code block under the README's "## Quick start"."""
    text = README.read_text()
    assert "\n## Quick start\n" in text, "the README has no '## Quick start' section"
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\w*\n(.*?)\n```", section, re.S)
    assert block, "the README's quick start has no code block"
    return block.group(1).splitlines()


def readme_smoke_argv() -> list[str]:
    """The README's quick-start smoke study as `python -m` arguments (`study.run ... --budget smoke`): what
    tests/test_study.py's smoke study runs, with its own --out."""
    for line in readme_quick_start():
        words = shlex.split(line, comments=True)
        if "-m" in words and "smoke" in words:
            argv = words[words.index("-m") + 1:]
            assert argv[0] == "study.run" and "--budget" in argv and "--out" not in argv, line
            assert words[0].endswith("python"), f"the smoke line runs another program: {line}"
            return argv
    raise AssertionError("the README's quick start shows no smoke study (python -m study.run ... --budget smoke)")


def make_targets() -> set[str]:
    rules = re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M)
    return set(rules) - {"PHONY"}


def test_the_readme_quick_start_shows_the_two_commands_and_the_smoke_study():
    lines = [strip_comment(line) for line in readme_quick_start()]
    assert "make study" in lines and "make test" in lines, lines
    argv = readme_smoke_argv()
    assert argv[argv.index("--budget") + 1] == "smoke"
    assert {"make study", "make test"} <= {f"make {t}" for t in make_targets()}


def test_every_study_command_the_docs_show_works():
    """Each command exists (study/<module>.py with a main), each (command, subcommand)'s --help runs once, and
    every flag a line shows is one that --help names."""
    shown = shown_commands()
    modules = {s.module for s in shown}
    # the README and docs show every command the project has
    assert {"run", "replicate", "report", "evaluate", "export", "bench", "bundle", "models"} <= modules, modules
    assert any(s.where.startswith("README.md") for s in shown)
    # each distinct --help once (they import torch and Ray: 2-4 s each), two at a time
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(help_text, modules))
        list(pool.map(lambda key: help_text(*key), {(s.module, s.first) for s in shown
                                                      if s.first in subcommands(s.module)}))
    problems = []
    for s in shown:
        source = REPO / "study" / f"{s.module}.py"
        if not source.is_file() or not re.search(r"^def main\(", source.read_text(), re.M):
            problems.append(f"{s.where}: study.{s.module} is not a command (no study/{s.module}.py with a main)")
            continue
        subs = subcommands(s.module)
        sub = None
        if subs and s.first is not None:
            if s.first not in subs:
                problems.append(f"{s.where}: python -m study.{s.module} has no subcommand {s.first!r}: {s.line}")
                continue
            sub = s.first
        known = set(FLAG.findall(help_text(s.module, sub)))
        for flag in s.flags:
            if flag not in known:
                problems.append(f"{s.where}: {flag} is not a flag of python -m study.{s.module} {sub or ''}: "
                                f"{s.line}")
    assert not problems, "\n".join(problems)


def test_every_make_target_the_docs_show_exists():
    targets, problems, seen = make_targets(), [], 0
    for path in DOCUMENTS:
        for number, line in code_lines(path):
            for target in MAKE.findall(line):
                seen += 1
                if target not in targets:
                    problems.append(f"{path.relative_to(REPO)}:{number}: make {target}: no such target")
    assert seen >= 2 and not problems, problems or "no make line found"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> set[str]:
    found, inside = set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside and (m := re.match(r"#{1,6}\s+(.*)", line)):
            found.add(slug(m.group(1)))
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files_and_headings_that_exist(path):
    text, inside, problems = [], False, []
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            text.append(re.sub(r"`[^`]*`", "", line))
    for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(text)):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in headings(linked):
            problems.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not problems, f"{path.relative_to(REPO)}: " + "; ".join(problems)


def test_the_readme_stays_short_and_every_document_says_what_it_is_for():
    assert len(README.read_bytes()) <= 16_000, "the README is meant to be read in five minutes"
    for path in DOCUMENTS[1:]:
        body = path.read_text().split("\n\n")
        assert body[0].startswith("# ") and len(body[1]) > 100 and not body[1].startswith(("#", "`", "|", "-")), (
            f"{path.relative_to(REPO)} should open with its title and a one-paragraph purpose")
