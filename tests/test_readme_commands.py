"""The README's set-up commands are what CI runs, and what the fresh-machine check follows."""

from pathlib import Path

from fresh_machine import readme_setup_commands

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readmes_two_commands():
    commands = readme_setup_commands(REPO / "README.md")
    assert len(commands) == 2 and "pip install -r requirements.txt" in commands[0] and commands[1] == "make test"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert ci[-2:] == commands  # .ci/run ends with them, verbatim


def test_the_parser_takes_only_the_setup_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Set up and test\n\ntext\n\n```bash\n# a comment\nfirst --flag\n\nsecond\n```\n\n"
                      "```bash\nnot this\n```\n\n## Next\n\n```bash\nnor this\n```\n")
    assert readme_setup_commands(readme) == ["first --flag", "second"]
