"""Just enough of a Dockerfile reader for tests/test_container.py: stages,
instructions, COPY and pip commands, .dockerignore rules, and the image's
paths moved under a temporary directory to replay its install steps."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined


@dataclass(frozen=True, slots=True)
class Stage:
    base: str  # with the global ARG defaults substituted
    name: str
    instructions: tuple[Instruction, ...]

    def args(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        (text,) = self.args(keyword)
        value = json.loads(text)
        assert isinstance(value, list), f"{keyword} is not in exec form: {text}"
        return [str(v) for v in value]

    def env(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for text in self.args("ENV") for item in shlex.split(text))
        return {key: value for key, value in pairs}


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages in order. Comment lines go, continuation lines are joined, as
    Docker reads them; enough of the syntax for this project's file."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    global_args: dict[str, str] = {}
    stages: list[tuple[str, str, list[Instruction]]] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append((base, name, []))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1][2].append(Instruction(keyword, rest))
    return [Stage(base, name, tuple(ins)) for base, name, ins in stages]


def copies(stage: Stage) -> list[tuple[list[str], list[str], str]]:
    """(flags, sources, destination) of each COPY."""
    out = []
    for text in stage.args("COPY"):
        words = shlex.split(text)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        out.append((flags, paths[:-1], paths[-1]))
    return out


def pip_installs(stage: Stage) -> list[list[str]]:
    """The words of every ``pip ... install ...`` command in the stage's RUNs."""
    found = []
    for text in stage.args("RUN"):
        for command in text.split("&&"):
            words = shlex.split(command)
            if words and words[0].endswith("/pip") and "install" in words:
                found.append(words)
    return found


def dockerignore_excludes(path: str, rules: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the
    last rule matching it or one of its parent directories decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):  # at any depth: the last part decides
            hit = any(fnmatch(p.rsplit("/", 1)[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch(p, pattern) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The image's absolute paths, moved under one temporary directory."""

    root: Path

    def moves(self) -> dict[str, Path]:
        r = self.root
        return {
            "/opt/robocall-shield/venv": r / "venv",
            "/opt/robocall-shield": r / "opt",
            "/opt/build": r / "build",
            "/dist": r / "dist",
            "/src": r / "src",
            "/etc/robocall-shield": r / "etc",
            "/var/lib/robocall-shield": r / "var",
        }

    def move(self, text: str) -> str:
        moves = self.moves()
        keys = "|".join(re.escape(k) for k in sorted(moves, key=len, reverse=True))
        return re.sub(rf"(?<![\w./-])({keys})(?=[/\s\"':]|$)", lambda m: str(moves[m[1]]), text)
