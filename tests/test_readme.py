"""The README's snippets run as pasted: every ```sh and ```python block, in order, in one
fresh shell beside a live `hub serve --sandbox` (a fresh data dir, a free loopback port),
as a reader would after `./scripts/serve`. A block that must not run (it runs until stopped,
or needs what a test machine lacks) says so on the line before its fence:
``<!-- readme-test: skip (why) -->``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import KEY
from tests.processes import HubProcess, free_port, running

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP = re.compile(r"^<!-- readme-test: skip \(.+\) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
PYTHON_END = "__README_PYTHON__"


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # where its fence opens, 1-based
    text: str
    skipped: bool


def blocks(markdown: str) -> list[Block]:
    found: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if opened is None or not opened.group(1):
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].rstrip() != "```":
            body.append(lines[index])
            index += 1
        index += 1
        skipped = start > 0 and SKIP.match(lines[start - 1].strip()) is not None
        found.append(Block(opened.group(1), start + 1, "\n".join(body), skipped))
    return found


def script(runnable: list[Block]) -> str:
    """One bash script: each block announced on stderr (to say which failed), Python run by
    the venv's interpreter, as the README says to."""
    parts = ["set -eu -o pipefail"]
    for block in runnable:
        parts.append(f'echo "@@ README.md:{block.line} $SECONDS" >&2')
        if block.language == "sh":
            parts.append(block.text)
        else:
            parts.append(f".venv/bin/python - <<'{PYTHON_END}'\n{block.text}\n{PYTHON_END}")
    return "\n".join(parts) + "\necho '@@ done' >&2\n"


def test_the_marker_is_understood():
    sample = "<!-- readme-test: skip (long) -->\n```sh\nsleep 1\n```\n```python\nx = 1\n```\n"
    assert blocks(sample) == [
        Block("sh", 2, "sleep 1", skipped=True),
        Block("python", 5, "x = 1", skipped=False),
    ]


def test_the_readme_marks_few_blocks_to_skip():
    found = [block for block in blocks(README.read_text()) if block.language in ("sh", "python")]
    skipped = [block for block in found if block.skipped]
    assert len(found) - len(skipped) >= 8 and len(skipped) <= 10


@pytest.mark.process
async def test_every_snippet_runs_as_pasted(tmp_path):
    runnable = [
        block
        for block in blocks(README.read_text())
        if block.language in ("sh", "python") and not block.skipped
    ]
    # The reader's checkout: a hub-data the hub fills, and the venv ./scripts/serve made.
    data_dir = tmp_path / "hub-data"
    data_dir.mkdir()
    (data_dir / "api-key").write_text(KEY + "\n")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    # curl -s answers 0 on an HTTP error; here an error answer must fail its snippet.
    (tmp_path / ".curlrc").write_text("fail-with-body\n")
    port = free_port()
    hub = HubProcess(data_dir, port, command=("serve", "--sandbox"),
                     extra={"HUB_SANDBOX_LATENCY": "0.3"})  # fmt: skip
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != venv_bin
    )
    # A fresh shell: none of the hub's variables but the address the README reads.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "VIRTUAL_ENV"))}
    env.update(PATH=path, CURL_HOME=str(tmp_path), HUB_URL=hub.url, HOME=str(tmp_path))
    with running(hub):
        async with httpx.AsyncClient() as http:
            await hub.ready(http)
        done = subprocess.run(
            ["bash", "-c", script(runnable)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    marks = [line for line in done.stderr.splitlines() if line.startswith("@@ ")]
    assert done.returncode == 0, (
        f"the snippet at {marks[-1][3:] if marks else '?'} failed ({done.returncode}):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    assert marks[-1] == "@@ done"
    assert (tmp_path / "out.png").exists() and (tmp_path / "edited.png").exists()
