"""Print pip constraints that pin every dependency in pyproject.toml to its lower bound, for
`make test-min`. A dependency without a lower bound is an error: its oldest release is what a
user's resolver may pick, and nobody has tested that."""

import re
import sys
from pathlib import Path

import tomllib

SKIP = {"torch"}  # the Makefile's TORCH_SPEC decides torch


def main() -> int:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["dev"], *extras["bench"]]
    missing = []
    for req in requirements:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group()
        if name == project["name"]:  # the dev extra's own extras, listed above
            continue
        bound = re.search(r">=\s*([\w.]+)", req)
        if name.lower() in SKIP:
            continue
        if bound is None:
            missing.append(name)
            continue
        print(f"{name}=={bound.group(1)}")
    if missing:
        print(f"no lower bound in pyproject.toml for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
