"""README.md's "The seed example, in three shells", pasted into three real ``pynode`` shells.

The section is parsed, not copied: its first fenced block gives the command of each shell
(``$ .venv/bin/pynode --sname 1`` ...), and every ```` ```python ```` block is pasted line by
line, in the README's order, into the shell(s) each statement belongs to:

- a statement whose (first) line ends in a comment ``# 1``, ``# 2 and 3``, ``# 1, 2`` goes
  to those shells; ``# 2 -> ('ok', 'a')`` also gives the result the shell must print;
- a block without such comments goes to the shells named by the sentence that introduces
  it: ``In **3**, ...`` or ``In **every** shell, ...`` (a block mixing both is an error);
- a statement is a line without indentation and the indented or blank lines after it (a
  class definition ends with the blank line that closes it at the prompt).

The README's node names ``1``, ``2``, ``3`` are replaced by names unique to the run (in the
``--sname`` flags and in ``"1@..."`` strings), and the shells use this test session's
port-mapper port and cookie (set in the environment by the ``this_node`` fixture), so a
user's port-mapper on the default port is never touched.  Pids in expected results match
loosely: ``<2@host.7.0>`` is any pid of the node that stands for ``2``.  At the end each
shell gets Ctrl-D and must exit with status 0.
"""

from __future__ import annotations

import io
import os
import re
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## The seed example, in three shells"
#: seconds for one line to give its prompt back (joining a group can take a few seconds)
LINE_TIMEOUT = 60
#: seconds for a shell to exit after Ctrl-D
EXIT_TIMEOUT = 30

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

SHELL_COMMAND = re.compile(r"\$ (?P<cmd>\S*pynode) --sname (?P<name>\w+)")
INTRO_SHELLS = re.compile(r"^In \*\*(?P<shell>\w+)\*\*")
SHELL_COMMENT = re.compile(
    r"\s#\s*(?P<shells>\w+(?:\s*(?:,|and)\s*\w+)*)\s*(?:->\s*(?P<result>.*?))?\s*$")
README_PID = re.compile(r"<(?P<node>\w+)@host\.\d+\.\d+>")
NODE_IN_CODE = re.compile(r"\b(?P<node>\w+)@(?=\{host\})")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")
PROBLEM = re.compile(r"Traceback|^[\w.]*(Error|Exception|Exit)\b", re.MULTILINE)


@dataclass
class Statement:
    lines: list[str]
    shells: list[str]
    result: str | None  # the README's "-> result", if any


@dataclass
class Session:
    commands: dict[str, str]  # README shell name ("1") -> its pynode command (".venv/bin/pynode")
    statements: list[Statement] = field(default_factory=list)


def _shells_of(text: str, all_shells: list[str]) -> list[str]:
    names = [s for s in re.split(r"\s*(?:,|and)\s*", text.strip()) if s]
    if names == ["every"]:
        return list(all_shells)
    unknown = set(names) - set(all_shells)
    assert not unknown, f"README: unknown shell(s) {sorted(unknown)} in {text!r}"
    return names


def parse_readme(text: str) -> Session:
    """The shells and the statements of the README's three-shell session, in order."""
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    lines = text[start:end if end >= 0 else len(text)].splitlines()
    session: Session | None = None
    paragraph: list[str] = []  # the last paragraph of text before the next block
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("```"):
            if line.strip():
                paragraph = paragraph + [line.strip()] if i > 0 and lines[i - 1].strip() else [line.strip()]
            i += 1
            continue
        info = line[3:].strip()
        j = lines.index("```", i + 1)
        body, intro = lines[i + 1:j], " ".join(paragraph)
        i, paragraph = j + 1, []
        if session is None:
            commands = {m["name"]: m["cmd"] for m in SHELL_COMMAND.finditer("\n".join(body))}
            assert commands, f"README: the first block of {SECTION!r} must give the pynode commands"
            session = Session(commands)
            continue
        if info != "python":
            continue
        session.statements.extend(_statements(body, intro, list(session.commands)))
    assert session is not None and session.statements, f"README: no python blocks in {SECTION!r}"
    return session


def _statements(body: list[str], intro: str, all_shells: list[str]) -> list[Statement]:
    groups: list[list[str]] = []
    for line in body:
        if line.strip() and not line[0].isspace():
            groups.append([line])
        else:
            assert groups, f"README: a block starts with an indented or blank line: {body!r}"
            groups[-1].append(line)
    comments = [SHELL_COMMENT.search(group[0]) for group in groups]
    if all(comments):
        return [Statement(group, _shells_of(m["shells"], all_shells), m["result"])  # type: ignore[index]
                for group, m in zip(groups, comments, strict=True)]
    assert not any(comments), f"README: some statements of this block name their shell, some not: {body!r}"
    m = INTRO_SHELLS.match(intro)
    assert m, f"README: a block without shell comments must follow 'In **N** ...': {intro!r} {body!r}"
    return [Statement(group, _shells_of(m["shell"], all_shells), None) for group in groups]


# -- the shells ---------------------------------------------------------------------------------

class Shell:
    def __init__(self, readme_name: str, node_name: str, child: pexpect.spawn,
                 transcript: io.StringIO) -> None:
        self.readme_name = readme_name
        self.node_name = node_name
        self.child = child
        self.transcript = transcript
        self.prompt = re.compile(rf"\({re.escape(node_name)}\)\d+> ")
        self.more = re.compile(r"\.\.\. ")

    def expect_prompt(self) -> bool:
        """Wait for a prompt; True for the main one, False for the continuation ``... ``."""
        return self.child.expect([self.prompt, self.more], timeout=LINE_TIMEOUT) == 0

    def enter(self, line: str) -> tuple[str, bool]:
        """Type ``line`` and Enter; (what it printed, whether the main prompt came back)."""
        self.child.sendline(line)
        self.child.expect_exact(line + "\r\n", timeout=LINE_TIMEOUT)  # the echo
        main = self.expect_prompt()
        return self.child.before.replace("\r\n", "\n"), main


def _result_pattern(expected: str, names: dict[str, str], host: str) -> str:
    """The README's result as a regex; a pid matches any pid of the node it names."""
    parts, pos = [], 0
    for m in README_PID.finditer(expected):
        parts.append(re.escape(expected[pos:m.start()]))
        parts.append(rf"<{re.escape(names[m['node']])}@{re.escape(host)}\.\d+\.\d+>")
        pos = m.end()
    parts.append(re.escape(expected[pos:]))
    return "".join(parts)


def test_readme_three_shell_session(this_node: str, tmp_path: Path) -> None:
    session = parse_readme(README.read_text())
    assert sorted(session.commands) == ["1", "2", "3"], session.commands
    expected_results = sum(1 for s in session.statements if s.result is not None)
    assert expected_results >= 10, f"README: only {expected_results} results to check: {session.statements}"

    host = this_node.split("@")[1]
    run = uuid.uuid4().hex[:6]
    names = {shell: f"{shell}r{run}" for shell in session.commands}  # sname of each README shell
    env = {**os.environ, "TERM": "dumb", "PYNODE_HISTORY": str(tmp_path / "history")}
    assert env.get("NODES_EPMD_PORT") and env.get("NODES_COOKIE"), "this_node sets the port and cookie"

    def localize(line: str) -> str:
        return NODE_IN_CODE.sub(lambda m: f"{names.get(m['node'], m['node'])}@", line)

    shells: dict[str, Shell] = {}
    try:
        for shell, command in session.commands.items():
            transcript = io.StringIO()
            child = pexpect.spawn(command, ["--sname", names[shell]], cwd=str(ROOT), env=env,
                                  encoding="utf-8", codec_errors="replace", dimensions=(50, 1000),
                                  timeout=LINE_TIMEOUT)
            child.logfile_read = transcript
            shells[shell] = Shell(shell, f"{names[shell]}@{host}", child, transcript)
        for sh in shells.values():
            assert sh.expect_prompt(), f"no prompt from {sh.node_name}:\n{sh.transcript.getvalue()}"

        def transcripts() -> str:
            return "\n".join(f"---- shell {sh.readme_name} ({sh.node_name}):\n{sh.transcript.getvalue()}"
                             for sh in shells.values())

        checked = 0
        for statement in session.statements:
            for shell in statement.shells:
                sh = shells[shell]
                for n, line in enumerate(statement.lines, 1):
                    output, main = sh.enter(localize(line))
                    where = f"shell {shell}, {line.strip()!r}"
                    assert not PROBLEM.search(output), f"{where} failed:\n{output}\n{transcripts()}"
                    last = n == len(statement.lines)
                    assert main == last, f"{where}: unexpected {'prompt' if main else '...'}\n{transcripts()}"
                printed = [out for out in output.splitlines() if out.strip() and not LOG_LINE.match(out)]
                if statement.result is not None:
                    pattern = _result_pattern(statement.result, names, host)
                    assert len(printed) == 1 and re.fullmatch(pattern, printed[0]), (
                        f"{where} printed {printed}, the README says {statement.result}\n{transcripts()}")
                    checked += 1
        assert checked == expected_results

        for sh in shells.values():  # Ctrl-D
            sh.child.sendeof()
            sh.child.expect(pexpect.EOF, timeout=EXIT_TIMEOUT)
            sh.child.close()
            assert (sh.child.exitstatus, sh.child.signalstatus) == (0, None), (
                f"{sh.node_name} exited with {sh.child.exitstatus} / signal {sh.child.signalstatus}"
                f"\n{transcripts()}")
            assert "Traceback" not in sh.transcript.getvalue(), transcripts()
    finally:
        for sh in shells.values():
            if sh.child.isalive():
                try:
                    os.kill(sh.child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh.child.close(force=True)
