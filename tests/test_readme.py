"""The README's quick path, pasted as is, and the links and names of README.md and docs/*.md.

Every line of a ```bash block in README.md and docs/*.md is checked: `make T` dry-runs from the
repository root (`make -n T`), a `hubertlab` line (or `torchrun ... -m hubertlab.cli ...`)
parses with the CLI's own parser, a `cp` copies a file that exists. The README's lines are
then run in order in a temporary folder (a copy of configs/ and a folder `my_audio` of short
synthetic recordings) wherever that is feasible in a test: `cp` and the quick commands
(`manifest`, `status`) run for real. `make demo` (12-16 minutes of CPU), `make test` (this
suite), `hubertlab pipeline` and `train` (a pretraining run) are too long for the suite and
are only dry-run or parsed; `export` is checked to read the model folder the pipeline above
it writes. Also: every `hubertlab <command>` named in code in README.md or docs/*.md exists
and answers `--help`, every repository path the files name exists, and every relative link
(and its #anchor) resolves.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from hubertlab import cli
from hubertlab.pipeline.config import load_pipeline_config
from tests.conftest import write_tone

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FILES = [README, *DOCS]
# Commands quick enough to run for real on a few seconds of audio (a README line whose config
# a command not run here would write is parsed only).
RUNNABLE = {"init", "manifest", "status"}
# Lines of other tools a block may hold, run for real in the temporary folder.
SHELL = {"cp", "cd", "mkdir", "ls", "cat"}
REPO_PATH = re.compile(r"(?<![\w/.-])((?:configs|docs|benchmarks|tests|experiments)/[\w./-]*\w)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def bash_lines(path: Path) -> list[str]:
    """The commands of the file's ```bash blocks, comments dropped, continuations joined."""
    lines = []
    for lang, body in FENCE.findall(path.read_text()):
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def code_text(path: Path) -> str:
    """Everything in fenced blocks and inline code spans."""
    text = path.read_text()
    spans = [body for _, body in FENCE.findall(text)]
    spans += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return "\n".join(spans)


def hubertlab_argv(line: str) -> list[str] | None:
    """The arguments after `hubertlab` (or `-m hubertlab.cli`), None for other lines."""
    words = shlex.split(line)
    for i, word in enumerate(words):
        if word in ("hubertlab", "hubertlab.cli") and (i == 0 or words[i - 1] == "-m"):
            return words[i + 1 :]
    return None


def parse(argv: list[str]):
    try:
        return cli.build_parser(argv).parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`hubertlab {' '.join(argv)}` does not parse (exit {e.code})")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_two_commands_are_there():
    lines = bash_lines(README)
    assert "make demo" in lines and "make test" in lines


@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_targets_dry_run(target):
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    done = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "hubertlab demo" in done.stdout if target == "demo" else "pytest" in done.stdout


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_block_line_is_known_and_parses(path):
    for line in bash_lines(path):
        argv = hubertlab_argv(line)
        words = shlex.split(line)
        if argv is not None:
            args = parse(argv)
            assert args.command in cli.COMMANDS, line
        elif words[0] == "make":
            assert len(words) == 2 and words[1] in ("demo", "test"), line
        elif words[0] == "cp":
            assert (ROOT / words[1]).is_file(), line
        else:
            assert words[0] in SHELL, f"{path.name}: a line this test cannot check: {line}"


def test_every_named_command_exists_and_answers_help(capsys):
    named = set()
    for path in FILES:
        named |= set(re.findall(r"\bhubertlab(?:\.cli)? ([a-z][a-z0-9-]*)", code_text(path)))
    assert named, "no command found: the pattern is broken"
    unknown = named - set(cli.COMMANDS)
    assert not unknown, f"named in README.md or docs/ but not a command: {sorted(unknown)}"
    for name in sorted(named):
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0, name
    capsys.readouterr()


def test_readme_runs_in_a_fresh_folder(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    for i in range(12):
        write_tone(tmp_path / "my_audio" / f"spk{i % 3}" / f"utt{i}.wav", 2.0)
    monkeypatch.chdir(tmp_path)
    pipelines, ran = [], set()
    for line in bash_lines(README):
        words, argv = shlex.split(line), hubertlab_argv(line)
        if argv is None:
            if words[0] in SHELL:
                assert subprocess.run(words, cwd=tmp_path).returncode == 0, line
            continue
        args = parse(argv)
        if args.command == "pipeline" and Path(args.config).is_file():
            pipelines.append(load_pipeline_config(args.config))
        if args.command == "export" and pipelines:
            # The model the pipeline line above ends with, as the pipeline writes it.
            models = [(c.iteration_dir(len(c.iterations)) / "model").resolve() for c in pipelines]
            assert (tmp_path / args.checkpoint).resolve() in models, line
        if args.command in RUNNABLE and line.split()[0] == "hubertlab":
            assert cli.main(argv) == 0, line
            ran.add(args.command)
    assert "init" in ran
    out = capsys.readouterr().out
    assert "pending" in out or "done" in out, out


def test_repository_paths_exist():
    made = {shlex.split(line)[2] for line in bash_lines(README) if line.startswith("cp ")}
    for path in FILES:
        for name in REPO_PATH.findall(path.read_text()):
            assert name in made or (ROOT / name).exists(), f"{path.name} names {name}: missing"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        name, _, anchor = target.partition("#")
        dest = (path.parent / name).resolve() if name else path
        assert dest.exists(), f"{path.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{path.name}: link to {target}: no such heading"
