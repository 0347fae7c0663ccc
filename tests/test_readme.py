"""The README is a landing page whose commands run as written: its length, every relative link in it and in docs/,
every ``repgeo`` command line of its code blocks (parsed by the real CLI parser), and its install and test lines
against what CI (``.ci/run``) executes. Each check is also run on a broken example, so it is known to fail."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from repgeo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 200

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(text: str, languages: tuple[str, ...] = ("bash", "sh", "shell")) -> list[list[str]]:
    """The lines of each fenced code block whose language is one of ``languages``, with backslash continuations
    joined."""
    blocks, current, lang = [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence and current is None:
            current, lang = [], fence.group(1)
        elif line.strip() == "```" and current is not None:
            if lang in languages:
                blocks.append(current)
            current = None
        elif current is not None:
            if current and current[-1].endswith("\\"):
                current[-1] = current[-1][:-1].rstrip() + " " + line.strip()
            else:
                current.append(line)
    return blocks


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of the Markdown headings outside code blocks: lower case, punctuation dropped, spaces to
    hyphens."""
    anchors, in_code = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"^#{1,6} (.+)$", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def broken_links(md: Path) -> list[str]:
    """Relative links of ``md`` whose file (or heading anchor, in a Markdown target) does not exist."""
    broken = []
    for target in LINK.findall(md.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # https:, mailto: — not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (md.parent / path).resolve() if path else md
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def repgeo_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``repgeo`` invocation in the shell code blocks of ``text``: ``repgeo ARGS``
    and ``... -m repgeo ARGS`` (torchrun), also as one step of an ``&&`` chain."""
    commands = []
    for block in code_blocks(text):
        for line in block:
            for step in line.split("&&"):
                words = shlex.split(step, comments=True)
                if words[:1] == ["repgeo"]:
                    commands.append(words[1:])
                elif "-m" in words and words[words.index("-m") + 1:][:1] == ["repgeo"]:
                    commands.append(words[words.index("-m") + 2:])
    return commands


def parse_error(argv: list[str]) -> str | None:
    """None when ``repgeo ARGV`` parses (``--help`` included), else the parser's exit status."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as stop:
        return None if stop.code == 0 else f"exit status {stop.code}"
    return None


def ci_lines(script: str) -> list[str]:
    """The commands a CI script executes after its preamble (shebang, comments, ``set``, ``cd``)."""
    lines = [line.strip() for line in script.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def lines_missing_from_readme(readme: str, script: str) -> list[str]:
    """The commands of the CI ``script`` that are not, verbatim, a line of a shell code block of ``readme``."""
    shown = {line.strip() for block in code_blocks(readme) for line in block}
    return [line for line in ci_lines(script) if line not in shown]


def too_long(text: str) -> bool:
    return len(text.splitlines()) > MAX_README_LINES


# ---- the README and docs as they are ----

def test_readme_is_a_landing_page_of_at_most_200_lines():
    text = README.read_text(encoding="utf-8")
    assert not too_long(text), f"README.md has {len(text.splitlines())} lines; move reference material to docs/"


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_points_to_an_existing_file(md):
    assert broken_links(md) == []


def test_every_code_block_in_the_readme_names_its_language():
    # an unlabelled block would escape the command check below (which reads the bash blocks)
    blocks = README.read_text(encoding="utf-8").split("```")[1::2]  # each starts with its language, if any
    assert blocks and [b[:40] for b in blocks if not re.match(r"\w+\n", b)] == []


def test_every_repgeo_command_in_the_readme_parses():
    commands = repgeo_commands(README.read_text(encoding="utf-8"))
    # the landing page shows the two main commands and one per use; none is skipped as a placeholder
    assert {"demo", "audit", "counterexamples", "distill", "fetch-assets", "layers"} <= {c[0] for c in commands if c}
    assert [(shlex.join(c), parse_error(c)) for c in commands if parse_error(c)] == []


@pytest.mark.parametrize("md", DOCS, ids=lambda p: p.name)
def test_every_repgeo_command_in_the_docs_parses(md):
    commands = repgeo_commands(md.read_text(encoding="utf-8"))
    assert [(shlex.join(c), parse_error(c)) for c in commands if parse_error(c)] == []


def test_the_readme_install_and_test_lines_are_what_ci_runs():
    script = (ROOT / ".ci" / "run").read_text()
    install, test = ci_lines(script)  # CI runs exactly two commands: the install line, then the tests
    assert install.startswith("python3 -m venv") and install.endswith("repgeo fetch-assets")
    assert test == "python -m pytest -n 2"
    assert lines_missing_from_readme(README.read_text(encoding="utf-8"), script) == []


# ---- each check fails on a broken example ----

def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n\n```\n# not a heading\n```\n")
    md = tmp_path / "page.md"
    md.write_text("[ok](other.md) [ok](other.md#a-heading) [web](https://example.org/x) [self](#top)\n"
                  "[gone](missing.md) [bad](other.md#not-a-heading)\n\n# Top\n")
    assert broken_links(md) == ["missing.md (no such file)", "other.md#not-a-heading (no heading #not-a-heading in "
                                                             "other.md)"]


def test_the_command_check_finds_a_wrong_flag_and_an_unknown_command():
    text = ("```bash\nrepgeo audit --teacher T --student S --bogus 1\nrepgeo fetch-assets --help\n"
            "python3 -m venv .venv && repgeo frobnicate\n"
            "torchrun --nproc_per_node 2 -m repgeo audit --teacher T \\\n    --student S --data x.csv\n```\n"
            "```python\nrepgeo = 1\n```\n")
    commands = repgeo_commands(text)
    assert commands == [["audit", "--teacher", "T", "--student", "S", "--bogus", "1"], ["fetch-assets", "--help"],
                        ["frobnicate"], ["audit", "--teacher", "T", "--student", "S", "--data", "x.csv"]]
    assert [parse_error(c) is None for c in commands] == [False, True, False, True]


def test_the_length_check_refuses_201_lines():
    assert not too_long("line\n" * MAX_README_LINES) and too_long("line\n" * (MAX_README_LINES + 1))


def test_the_ci_check_finds_a_changed_install_line():
    script = "#!/usr/bin/env bash\nset -e\ncd x\npip install -e .\npython -m pytest -n 2\n"
    assert lines_missing_from_readme("```bash\npip install -e .\npython -m pytest -n 2\n```\n", script) == []
    readme = "```bash\npip install -e '.[test]'\n```\n\npython -m pytest -n 2\n"  # the test line is not in a block
    assert lines_missing_from_readme(readme, script) == ["pip install -e .", "python -m pytest -n 2"]
