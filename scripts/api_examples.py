"""Regenerates ``config/api_examples.json``, the examples of ``/api/schema/``
(``.venv/bin/python scripts/api_examples.py``).

The examples come from a story told through the API (every operation, a few
of the problems too) on the test database, as tests/test_api_examples.py
tells it in every test run; with ``API_EXAMPLES_WRITE=1`` that test writes
what the story gave to the file, secrets and tokens replaced by
placeholders, identifiers and times by stable ones. Run it when the API
changes and the test says the examples are stale; commit the file.
Arguments are passed to pytest (``--create-db``, ``-x``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    env = os.environ | {"API_EXAMPLES_WRITE": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_api_examples.py::test_the_story_gives_every_example",
        "-q",
        "-p",
        "no:cacheprovider",
        *argv,
    ]
    written = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    if written != 0:
        return written
    print("wrote config/api_examples.json; checking it against the schema")
    env.pop("API_EXAMPLES_WRITE")
    command[4] = "tests/test_api_examples.py"
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
