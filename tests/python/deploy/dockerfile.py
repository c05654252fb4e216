"""deploy/Dockerfile read as its instructions, stage by stage, enough for the
tests to check it against the rest of deploy/ (the runtime user, its
environment, what it copies)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults in scope

    def all(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]

    def expand(self, text: str) -> str:
        """``${NAME}`` and ``$NAME`` of the stage's ARGs, with their defaults."""
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.args.get(m[1] or m[2], m[0]),
            text,
        )

    def env(self) -> dict[str, str]:
        """ENV NAME=VALUE ... of the stage, in order (a later one wins)."""
        values: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                values[name] = self.expand(value)
        return values


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # a comment (or a parser directive), inside a continued line too
        pending = f"{pending[:-1]} {line.strip()}" if pending else line.strip()
        if pending.endswith("\\"):
            continue
        if pending:
            word, _, rest = pending.partition(" ")
            found.append((word.upper(), rest.strip()))
        pending = ""
    return found


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for instruction, arguments in instructions(path.read_text()):
        if instruction == "FROM":
            words = arguments.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(name, base))
        elif instruction == "ARG":
            name, _, default = arguments.partition("=")
            (found[-1].args if found else global_args)[name] = default
        else:
            found[-1].instructions.append((instruction, arguments))
    return found


def runtime() -> Stage:
    """The last stage: what the image is."""
    return stages()[-1]
