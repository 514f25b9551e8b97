"""Every code block of the README runs as written, is parsed, or is listed here with the reason it is not run.

Each test re-reads the README, and finds its blocks by heading and content, not by position. A block no rule
claims fails `test_every_block_is_claimed`, so a new block needs a test (or an entry, with its reason) here.
Python blocks run with the venv's `python`, shell blocks with `bash -euo pipefail`, each in a temporary
folder with `BENTO_*` pointing at an emulator, dlt's data folder inside it, and every name lookup but
loopback refused (the network guard).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml  # type: ignore[import-untyped]

from bento_api.emulator import BentoEmulator
from bento_api.emulator.config import MODE_ENV
from bento_destination.clients import CHECK_PATH
from pipelines.cli import build_parser
from pipelines.demo import BAD_EVENTS, write_crm

from .destination_support import must_isolate
from .readme_blocks import Block, fenced_blocks, readme_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NETWORK_GUARD = Path(__file__).resolve().parent / "network_guard"
ORCHESTRATOR_EXAMPLES = ("dagster", "airflow", "prefect")
#: the budget the README's emulator instructions export
RAISED_BUDGET = {"BENTO_REQUESTS_PER_MINUTE": "6000"}


# -- which rule covers which block ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A kind of README block and how it is covered: run here, parsed here, tested elsewhere, or not run."""

    name: str
    claims: Callable[[Block], bool]
    how: str


def _is_orchestrator_example(block: Block) -> bool:
    return block.language == "python" and any(
        block.text == (ROOT / "orchestrators" / f"{name}_example.py").read_text() for name in ORCHESTRATOR_EXAMPLES)


def _shell(heading: str, marker: str) -> Callable[[Block], bool]:
    return lambda block: block.language == "sh" and block.heading == heading and marker in block.text


RULES = (
    # run here
    Rule("destination", lambda b: b.language == "python" and "check_credentials(" in b.text, "run here"),
    Rule("emulator_for_tests", lambda b: b.language == "python" and "BentoEmulator(" in b.text
         and b.heading == "The emulator, for your own tests", "run here, with run_my_pipeline defined first"),
    Rule("cli_emulator", _shell("The command line", "bento-dlt emulator --port"), "run here, on a free port"),
    Rule("cli_commands", _shell("The command line", "export BENTO_BASE_URL="), "run here, against cli_emulator"),
    # parsed here
    Rule("toml", lambda b: b.language == "toml", "parsed with tomllib"),
    Rule("yaml", lambda b: b.language in ("yaml", "yml"), "parsed with PyYAML; its bento-dlt lines by the CLI"),
    # run by other tests
    Rule("source", lambda b: b.language == "python" and b.heading == "Bento → warehouse: the source",
         "run by tests/test_source_readme.py"),
    Rule("orchestrators", _is_orchestrator_example,
         "the files orchestrators/*_example.py, each run in its own venv by .ci/run "
         "(tests/test_readme_orchestrators.py)"),
    # not run: the reason is the `how`
    Rule("make_quick_start", _shell("Quick start", "make demo"),
         "make itself, run by .ci/run on a fresh clone (make demo, make test); the targets are checked here"),
    Rule("make_development", _shell("Development", "make lint"),
         "make targets, each a step of .ci/run; the targets are checked here"),
    Rule("postgres", _shell("Postgres, both ways", "postgresql://"),
         "needs a Postgres server at db.internal; tests/test_postgres.py runs these commands against a real "
         "server (make test-postgres); the arguments are checked here by the CLI's parser"),
    Rule("cron", lambda b: b.language == "" and b.heading == "Scheduling" and b.text.startswith("*/30 "),
         "crontab lines for a server with a real account; the arguments are checked here by the CLI's parser"),
    Rule("demo_output", lambda b: b.language == "" and b.heading == "Quick start" and "(destination `bento`)" in b.text,
         "sample output of make demo, not code"),
)


def claims(block: Block) -> list[str]:
    return [rule.name for rule in RULES if rule.claims(block)]


def blocks_of(rule_name: str) -> list[Block]:
    found = [block for block in readme_blocks(README) if rule_name in claims(block)]
    assert found, f"no README block matches rule {rule_name!r} any more: update the rule or the README"
    return found


def test_every_block_is_claimed_by_exactly_one_rule() -> None:
    unclaimed = [block.where() for block in readme_blocks(README) if len(claims(block)) != 1]
    assert not unclaimed, f"README blocks with no rule (or several) in {__file__}: {unclaimed}"
    used = {name for block in readme_blocks(README) for name in claims(block)}
    assert used == {rule.name for rule in RULES}, f"rules that match no block: {sorted({r.name for r in RULES} - used)}"


def test_the_runner_finds_every_fence() -> None:
    """The README's fences all pair up, and the block count agrees with a plain count of fence lines."""
    fences = [line for line in README.read_text().splitlines() if line.startswith("```")]
    assert len(fences) == 2 * len(readme_blocks(README))


def test_blocks_keep_language_and_heading_and_an_unclosed_fence_is_an_error() -> None:
    text = "# A\n```sh\n# a comment, not a heading\necho hi\n```\n## B\n```\nplain\n```\n"
    assert fenced_blocks(text) == [Block("sh", "A", "# a comment, not a heading\necho hi\n", 2),
                                   Block("", "B", "plain\n", 7)]
    with pytest.raises(ValueError, match="line 1"):
        fenced_blocks("```python\nx = 1\n")


# -- the environment blocks run in ---------------------------------------------------------------------------


def block_env(folder: Path, lookups: Path, **extra: str) -> dict[str, str]:
    """This process's environment less any Bento or dlt settings (the emulator's mode too: the README's
    commands are for its default mode); dlt's data folder inside `folder`; name lookups other than loopback
    refused and written to `lookups`."""
    env = {key: value for key, value in os.environ.items() if not must_isolate(key) and key != MODE_ENV}
    env.update(DLT_DATA_DIR=str(folder / "dlt_data"), PYTHONPATH=os.pathsep.join((str(NETWORK_GUARD), str(ROOT))),
               NETWORK_GUARD_LOG=str(lookups), **extra)
    return env


def run_python(code: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = folder / "readme_block.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=240)


def no_lookups(lookups: Path) -> None:
    assert not lookups.exists() or not lookups.read_text(), f"names looked up: {lookups.read_text()}"


# -- Python blocks ---------------------------------------------------------------------------------------------


@pytest.mark.emulator_mode("default")  # writes applied at once, as the block's reader expects
def test_destination_block_sends_its_dataframe(emu: BentoEmulator, tmp_path: Path) -> None:
    (block,) = blocks_of("destination")
    lookups = tmp_path / "lookups.log"
    done = run_python(block.text, tmp_path, block_env(tmp_path, lookups, **emu.env(), **RAISED_BUDGET))
    assert done.returncode == 0, done.stderr
    frame = re.search(r"df = pd\.DataFrame\((\{.*?\})\)", block.text, flags=re.S)
    assert frame is not None, "the block builds `df` from a literal dict"
    emails = set(ast.literal_eval(frame.group(1))["email"])  # the block's own literal: the rows it sends
    assert emails and emails == set(emu.store.subscribers)
    assert len(emu.requests(CHECK_PATH)) == 1  # check_credentials' one GET; the load trusted its proof
    assert (tmp_path / "dlt_data" / "pipelines" / "crm_to_bento").is_dir()
    no_lookups(lookups)


#: run_my_pipeline in the README stands for the reader's pipeline: here, one subscriber through `bento`
MY_PIPELINE = '''
import dlt

from bento_destination import bento


def run_my_pipeline(**settings):
    pipeline = dlt.pipeline("my_pipeline", destination=bento(**settings))
    pipeline.run([{"email": "reader@example.com", "plan": "pro"}], table_name="subscribers").raise_on_failed_jobs()
'''


def test_emulator_block_runs_a_pipeline_against_its_emulator(tmp_path: Path) -> None:
    (block,) = blocks_of("emulator_for_tests")
    assert "run_my_pipeline(" in block.text
    lookups = tmp_path / "lookups.log"
    checked = block.text + '\nassert "reader@example.com" in emu.store.subscribers\n'
    done = run_python(MY_PIPELINE + checked, tmp_path, block_env(tmp_path, lookups))
    assert done.returncode == 0, done.stderr
    no_lookups(lookups)


def test_emulator_block_fails_when_nothing_is_sent(tmp_path: Path) -> None:
    """The block's own assert is a real check: a pipeline that sends nothing makes it fail."""
    (block,) = blocks_of("emulator_for_tests")
    idle = "def run_my_pipeline(**settings):\n    pass\n"
    done = run_python(idle + block.text, tmp_path, block_env(tmp_path, tmp_path / "lookups.log"))
    assert done.returncode == 1 and "AssertionError" in done.stderr


# -- the command line, two shells --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, server: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the emulator block exited with {server.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the emulator block never listened on {port}")


@pytest.fixture
def emulator_shell(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The first shell: the README's emulator command, in a folder set up as the repository after `make demo`
    (`.venv` and `demo_output/crm.duckdb`), on a free port instead of 8787; stopped with Ctrl-C (SIGINT)."""
    (block,) = blocks_of("cli_emulator")
    assert "8787" in block.text
    port = free_port()
    folder = tmp_path / "repo"
    (folder / "demo_output").mkdir(parents=True)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    write_crm(folder / "demo_output" / "crm.duckdb", 2500, 3000)  # what `make demo` writes there
    server = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block.text.replace("8787", str(port))], cwd=folder,
        env=block_env(tmp_path, tmp_path / "emulator_lookups.log"), text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, server)
        yield folder, port
    finally:
        os.killpg(server.pid, signal.SIGINT)
        output, _ = server.communicate(timeout=30)
        assert server.returncode in (0, 130), output


def test_cli_commands_run_against_the_emulator_shell(emulator_shell: tuple[Path, int], tmp_path: Path) -> None:
    folder, port = emulator_shell
    (block,) = blocks_of("cli_commands")
    assert "8787" in block.text
    lookups = tmp_path / "lookups.log"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text.replace("8787", str(port))], cwd=folder,
                          env=block_env(tmp_path, lookups), text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=400)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    no_lookups(lookups)

    # the dry run sent no contact; the events sync created its people; extract read them back
    with duckdb.connect(str(folder / "demo_output" / "crm.duckdb"), read_only=True) as crm:
        contacts = {row[0] for row in crm.execute("select email from crm_contacts where email is not null").fetchall()}
        event_people = {row[0] for row in crm.execute("select distinct email from product_events").fetchall()}
    event_people -= {email for email, *_ in BAD_EVENTS}
    with duckdb.connect(str(folder / "bento_data.duckdb"), read_only=True) as extracted:
        tables = {row[0] for row in extracted.execute("select table_name from information_schema.tables").fetchall()}
        people = {row[0] for row in extracted.execute("select email from bento.subscribers").fetchall()}
    assert {"tags", "subscribers"} <= tables
    assert event_people and event_people <= people
    assert not (contacts - event_people) & people


# -- parsed blocks ---------------------------------------------------------------------------------------------


def test_toml_blocks_parse_with_both_sections() -> None:
    for block in blocks_of("toml"):
        config = tomllib.loads(block.text)
        for section in (config["sources"]["bento"], config["destination"]["bento"]):
            assert set(section) == {"site_uuid", "publishable_key", "secret_key"}, block.where()


def bento_dlt_commands(text: str) -> list[list[str]]:
    """The arguments of each `bento-dlt` command in shell-like text (comments, `cd ... &&`, env prefixes and
    redirections left out)."""
    commands = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        words = shlex.split(line)
        starts = [i for i, word in enumerate(words) if word == "bento-dlt" or word.endswith("bin/bento-dlt")]
        if starts:
            rest = words[starts[0] + 1:]
            ends = [i for i, word in enumerate(rest) if word in (">>", ">", "|", "&&", "2>&1")]
            commands.append(rest[: ends[0]] if ends else rest)
    return commands


def parses(arguments: list[str]) -> None:
    try:
        build_parser().parse_args(arguments)
    except SystemExit as exit_:
        raise AssertionError(f"bento-dlt refuses: {shlex.join(arguments)}") from exit_


def test_yaml_blocks_parse_and_their_commands_are_accepted() -> None:
    for block in blocks_of("yaml"):
        workflow = yaml.safe_load(block.text)
        steps = workflow["jobs"]["sync"]["steps"]
        runs = "\n".join(step["run"] for step in steps if "run" in step)
        assert set(workflow["jobs"]["sync"]["env"]) == {"BENTO_SITE_UUID", "BENTO_PUBLISHABLE_KEY", "BENTO_SECRET_KEY"}
        commands = bento_dlt_commands(runs)
        assert commands, block.where()
        for arguments in commands:
            parses(arguments)


@pytest.mark.parametrize("rule", ["cron", "postgres"])
def test_commands_not_run_are_accepted_by_the_cli(rule: str) -> None:
    for block in blocks_of(rule):
        commands = bento_dlt_commands(block.text)
        assert len(commands) == len([line for line in block.text.splitlines() if "bento-dlt" in line]) > 0
        for arguments in commands:
            parses(arguments)


def test_a_wrong_option_is_caught_by_the_parser_check() -> None:
    """parses() is a real check: a misspelled option fails it."""
    with pytest.raises(AssertionError, match="refuses"):
        parses(["sync", "--from", "crm.duckdb", "--as", "subscribers", "--yess"])


@pytest.mark.parametrize("rule", ["make_quick_start", "make_development"])
def test_make_blocks_name_real_targets(rule: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {name for line in re.findall(r"^([\w .-]+):(?!=)", makefile, flags=re.M) for name in line.split()}
    for block in blocks_of(rule):
        for line in block.text.splitlines():
            words = line.split("#", 1)[0].split()
            assert words[0] == "make", block.where()
            assert set(words[1:]) <= targets, f"{block.where()}: {set(words[1:]) - targets} not in the Makefile"


def test_ci_times_make_demo_and_make_test() -> None:
    """The Quick start's two commands are CI steps, timed, on the fresh clone CI runs in."""
    steps = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^time make demo$", steps, flags=re.M) and re.search(r"^time make test$", steps, flags=re.M)
