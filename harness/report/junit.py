"""``--junit FILE``: the gates of a run as JUnit XML, one test case per engine and gate, the format
CI systems (GitHub Actions, GitLab, Jenkins) read test results in.

Suite: the scenario; test case: ``classname`` ``durabench.<scenario>.<engine>``, ``name`` the gate
(``ran``, ``violations``, ``slo.max_e2e_p99`` ...). A failed gate carries ``<failure>``, an engine
that did not run ``<error>``, a gate with nothing to judge ``<skipped>``; the message says the
figure and the limit.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from harness.analysis.gates import GateResult
from harness.errors import UserError


def document(results: Sequence[GateResult], suite: str, timestamp: str) -> ET.ElementTree:
    counts = {k: sum(1 for r in results if r.outcome == k) for k in ("fail", "error", "skipped")}
    attrs = {"tests": str(len(results)), "failures": str(counts["fail"]), "errors": str(counts["error"]),
             "skipped": str(counts["skipped"])}
    root = ET.Element("testsuites", {"name": "durabench", **attrs})
    ts = ET.SubElement(root, "testsuite", {"name": suite, **attrs, "timestamp": timestamp})
    for r in results:
        case = ET.SubElement(ts, "testcase", {"classname": f"durabench.{suite}.{r.engine}", "name": r.gate,
                                              "time": "0"})
        if r.outcome == "fail":
            ET.SubElement(case, "failure", {"message": r.message, "type": "gate"}).text = r.message
        elif r.outcome == "error":
            ET.SubElement(case, "error", {"message": r.message, "type": "engine"}).text = r.message
        elif r.outcome == "skipped":
            ET.SubElement(case, "skipped", {"message": r.message})
        else:
            ET.SubElement(case, "system-out").text = r.message
    ET.indent(root)
    return ET.ElementTree(root)


def check_path(path: Path) -> None:
    """Refuse, before any work, a --junit path that cannot be written."""
    if path.is_dir():
        raise UserError(f"--junit {path}: is a directory; give a file name such as {path / 'durabench.xml'}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--junit {path}: {parent} is a file, not a directory; give a path in a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--junit {path}: cannot create {parent}: {exc.strerror or exc}") from None


def write(path: Path, results: Sequence[GateResult], suite: str, timestamp: str) -> None:
    """Write the XML and read it back (a file CI cannot parse would hide every failure)."""
    check_path(path)
    try:
        document(results, suite, timestamp).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise UserError(f"--junit {path}: cannot write: {exc.strerror or exc}") from None
    ET.parse(path)
