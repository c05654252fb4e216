"""What every benchmark script does with its result: print it as JSON and,
with --out, write the same JSON to a file."""

from __future__ import annotations

import json


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
