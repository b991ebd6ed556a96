"""Figures docs/engines.md gives adapter authors match the code."""

from __future__ import annotations

from harness.run import runner
from tests.conftest import ROOT


def test_engines_doc_states_the_lookup_batch_and_the_floor_phase() -> None:
    text = (ROOT / "docs" / "engines.md").read_text()
    assert f"at most **{runner.LOOKUP_BATCH} ids** per `lookup` call" in text
    assert f"for up to {runner.SETTLE_TIMEOUT_S:g} s" in text and f"every {runner.SETTLE_POLL_S:g} s" in text
    assert "unloaded\nfloor workflows" in text or "unloaded floor workflows" in text
