"""The fenced code blocks of a Markdown file, each with its language and the heading it sits under.

The README block tests find blocks by heading and content rather than by position, so an edit elsewhere
in the README does not shift which test covers which block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: `language` is "" for a bare fence; `heading` is the nearest heading above it."""

    language: str
    heading: str
    text: str
    line: int  # where the opening fence is, 1-based

    def where(self) -> str:
        """How a failure message names the block: line, language and heading."""
        return f"README.md:{self.line} ```{self.language} under {self.heading!r}"


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block, in order; an unclosed fence is an error, not a silently dropped block."""
    blocks: list[Block] = []
    heading = ""
    opened: tuple[str, str, int] | None = None  # (fence, language, line)
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        if opened is None:
            fence = FENCE.match(line)
            title = HEADING.match(line)
            if fence:
                opened, body = (fence.group(1), fence.group(2).lower(), number), []
            elif title:
                heading = title.group(2)
        elif line.strip() == opened[0]:
            blocks.append(Block(opened[1], heading, "".join(f"{text}\n" for text in body), opened[2]))
            opened = None
        else:
            body.append(line)
    if opened is not None:
        raise ValueError(f"a ``` fence opened at line {opened[2]} is never closed")
    return blocks


def readme_blocks(readme: Path) -> list[Block]:
    """The README's blocks, read afresh on each call (the README is edited while tests exist)."""
    return fenced_blocks(readme.read_text(encoding="utf-8"))
