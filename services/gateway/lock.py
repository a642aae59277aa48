"""Pins the gateway image's requirements: resolves requirements.in with pip and writes requirements.txt.

Run by `make gateway-lock`; tests/deploy resolves the lock the same way to check that it is
complete and holds no torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "# Pinned from requirements.in by `make gateway-lock` (services/gateway/lock.py); do not edit.\n"


def report_command(requirements: Path, report: Path, python: str = sys.executable) -> list[str]:
    """The pip call that resolves `requirements` for an empty environment into a JSON report."""
    return [
        python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", "--report", str(report), "-r", str(requirements),
    ]  # fmt: skip


def read_report(report: Path) -> dict[str, str]:
    """{distribution: version} of everything a pip report would install."""
    installs = json.loads(report.read_text())["install"]
    return {
        i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in installs
    }


def resolve(requirements: Path) -> dict[str, str]:
    """Every distribution pip would install for `requirements` into an empty environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            report_command(requirements, report),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return read_report(report)


def main() -> int:
    pins = resolve(HERE / "requirements.in")
    lines = [f"{name}=={version}\n" for name, version in sorted(pins.items())]
    (HERE / "requirements.txt").write_text(HEADER + "".join(lines))
    print(f"pinned {len(lines)} distributions into {HERE / 'requirements.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
