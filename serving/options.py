"""Serving tunables (not deployment configuration: paths, ports and secrets come from config.settings).

These are behaviour knobs with safe defaults; `python -m serving` reads them from the
PM_SERVING_OPTIONS setting (a JSON object), tests and the bench pass their own values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields

# Python types each declared option type accepts (a JSON integer is a valid float; a bool is no number).
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
# Upper bound of every interval / timeout: one week, far above any sensible value and far below what
# threading's waits accept (a wait of ~1e10 s overflows the platform's time_t).
MAX_INTERVAL_S = 7 * 86400.0


@dataclass(frozen=True)
class ServingOptions:
    max_batch_size: int = 100
    # Largest request body accepted (bytes), counted as it arrives: bigger bodies get a 413 before they
    # are parsed, so one client cannot stall the event loop for all. 1 MiB holds max_batch_size=100
    # items many times over; raise it together with a much larger max_batch_size.
    max_body_bytes: int = 1_048_576
    # How often the champion alias is re-read from the registry (0 disables polling; /admin/reload still works).
    poll_interval_s: float = 30.0
    # Online-store waits: Redis socket timeouts, SQLite busy timeout (a locked file). A dead or locked
    # store must answer 503 in well under a second, not hang.
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
        """Every option checked by name: a NaN interval would make the poller spin (Event.wait(nan)
        returns at once), an infinite or negative one would crash or stall a thread."""
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _TYPES[f.type]
            if isinstance(value, bool) != (f.type == "bool") or not isinstance(value, expected):
                raise ValueError(f"option {f.name!r} must be a {f.type}, got {value!r}")
            if f.type == "float" and not math.isfinite(value):
                raise ValueError(f"option {f.name!r} must be a finite number, got {value!r}")
        for name in ("max_batch_size", "max_body_bytes", "log_queue_size", "log_flush_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("shadow_share", "ab_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.poll_interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"poll_interval_s must be within [0, {MAX_INTERVAL_S:.0f}] seconds (0 disables "
                             f"polling), got {self.poll_interval_s}")
        for name in ("online_timeout_s", "log_flush_interval_s"):
            if not 0.0 < getattr(self, name) <= MAX_INTERVAL_S:
                raise ValueError(f"{name} must be > 0 and <= {MAX_INTERVAL_S:.0f} seconds, got {getattr(self, name)}")

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
            expected = _TYPES[types[name]]
            if isinstance(value, bool) != (types[name] == "bool") or not isinstance(value, expected):
                raise ValueError(f"{where}: option {name!r} must be a {types[name]}, got {value!r}")
        return cls(**values)

    @property
    def load_challenger(self) -> bool:
        return self.shadow_share > 0 or self.ab_share > 0
