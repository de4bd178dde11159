"""Serving tunables (not deployment configuration: paths, ports and secrets come from config.settings).

These are behaviour knobs with safe defaults; tests and the bench pass their own values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingOptions:
    max_batch_size: int = 100
    # How often the champion alias is re-read from the registry (0 disables polling; /admin/reload still works).
    poll_interval_s: float = 30.0
    # Redis socket timeouts: a dead online store must answer 503 in well under a second, not hang.
    online_timeout_s: float = 0.25
    # Prediction log: bounded queue (a full queue drops rows and counts them, never blocks a request).
    log_queue_size: int = 10_000
    log_flush_interval_s: float = 2.0
    log_flush_rows: int = 5_000
    # Share of requests (0..1) also scored by the `challenger` in shadow (logged, never returned).
    shadow_share: float = 0.0
    # Load the previous champion as fallback model (the registry's `previous_champion` tag at start-up).
    load_fallback: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 0.0 <= self.shadow_share <= 1.0:
            raise ValueError(f"shadow_share must be within [0, 1], got {self.shadow_share}")
        if self.log_queue_size < 1:
            raise ValueError(f"log_queue_size must be >= 1, got {self.log_queue_size}")
        if self.poll_interval_s < 0 or self.online_timeout_s <= 0:
            raise ValueError("poll_interval_s must be >= 0 and online_timeout_s > 0")
