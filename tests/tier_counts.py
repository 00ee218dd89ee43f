"""Print a tier's counts from pytest's JUnit XML: ``288 passed, 0 skipped, 0 failed``.

The Makefile's tier line ends with it. Errors (a failing fixture, a collection error) count
as failed. A report that is missing (pytest did not get as far as writing it) says so.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(path: Path) -> tuple[int, int, int]:
    """(passed, skipped, failed) summed over the report's test suites."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = skipped = failed = 0
    for s in suites:
        total += int(s.get("tests", 0))
        skipped += int(s.get("skipped", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
    return total - skipped - failed, skipped, failed


def main(argv: list[str]) -> int:
    path = Path(argv[1])
    try:
        passed, skipped, failed = counts(path)
    except (OSError, ET.ParseError):
        print("no test report")
        return 0
    print(f"{passed} passed, {skipped} skipped, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
