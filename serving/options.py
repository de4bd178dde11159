"""Serving tunables (not deployment configuration: paths, ports and secrets come from config.settings).

These are behaviour knobs with safe defaults; `python -m serving` reads them from the
PM_SERVING_OPTIONS setting (a JSON object), tests and the bench pass their own values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields


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
    # A/B split: share of MARKETS (0..1) whose predictions the `challenger` answers (group "B"); the
    # rest get the champion (group "A"). Sticky: a market's group depends only on its id and ab_salt.
    ab_share: float = 0.0
    # Changing the salt starts a new experiment with a fresh assignment.
    ab_salt: str = "ab-1"
    # Load the previous champion as fallback model (the registry's `previous_champion` tag at start-up).
    load_fallback: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 0.0 <= self.shadow_share <= 1.0:
            raise ValueError(f"shadow_share must be within [0, 1], got {self.shadow_share}")
        if not 0.0 <= self.ab_share <= 1.0:
            raise ValueError(f"ab_share must be within [0, 1], got {self.ab_share}")
        if self.log_queue_size < 1:
            raise ValueError(f"log_queue_size must be >= 1, got {self.log_queue_size}")
        if self.poll_interval_s < 0 or self.online_timeout_s <= 0:
            raise ValueError("poll_interval_s must be >= 0 and online_timeout_s > 0")

    @classmethod
    def from_json(cls, text: str, where: str = "PM_SERVING_OPTIONS") -> "ServingOptions":
        """Options from a JSON object of field values (empty text: defaults); errors name the bad key."""
        if not text.strip():
            return cls()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not valid JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"{where} must be a JSON object of option values, got {type(values).__name__}")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}; known: {sorted(types)}")
        for name, value in values.items():
            expected = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}[types[name]]
            if isinstance(value, bool) != (types[name] == "bool") or not isinstance(value, expected):
                raise ValueError(f"{where}: option {name!r} must be a {types[name]}, got {value!r}")
        return cls(**values)

    @property
    def load_challenger(self) -> bool:
        return self.shadow_share > 0 or self.ab_share > 0
