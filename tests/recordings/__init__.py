"""Claude Code's stream-json output, recorded: the real CLI (Claude Code 2.1.330, `claude -p
--output-format stream-json --verbose`) against tests/agent_standin.py, trimmed to the fields that
matter to the runner. One file per run, one message per line as the CLI writes them.

rate_limited and unreachable are modelled, not recorded: api_error with a 429 and a refused
connection in place of the 401, worded as the CLI documents them
(code.claude.com/docs/en/errors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDED: dict[str, list[dict[str, Any]]] = {
    path.stem: [json.loads(line) for line in path.read_text().splitlines()]
    for path in sorted(Path(__file__).parent.glob("*.jsonl"))
}
