"""The training summary a user reads next to the gate verdicts."""

from __future__ import annotations

from training.registry import GateVerdict
from training.train import TrainResult


def test_summary_shows_the_market_weighted_metrics_the_gates_read():
    """The gates read market-weighted metrics by default: a summary printing only the row-weighted ECE
    (0.0488, "under 0.05") beside a failing ECE gate (0.0519) reads as a contradiction."""
    metrics = {"valid_brier": 0.16, "valid_brier_market": 0.18, "valid_brier_skill": 0.1, "valid_ece": 0.0488,
               "valid_roc_auc": 0.8, "train_valid_gap": 0.01, "valid_mw_brier": 0.15, "valid_mw_brier_skill": 0.09,
               "valid_mw_ece": 0.0519, "mw_train_valid_gap": 0.02}
    result = TrainResult(run_id="r", version="2", metrics=metrics,
                         verdicts=[GateVerdict("ece", False, 0.0519, 0.05, "valid ECE (market-weighted) 0.0519 <= 0.05")],
                         aliases=[], training_set_hash="0" * 64)
    text = result.to_text()
    assert "valid, row-weighted: " in text and "valid_ece=0.0488" in text
    assert "valid, market-weighted: " in text and "valid_mw_ece=0.0519" in text and "mw_train_valid_gap=0.0200" in text
