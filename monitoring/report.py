"""Outputs of a monitoring run: JSON, self-contained HTML, Prometheus textfile, alerts, retrain requests.

Every file is written to a temp name and renamed into place, so a reader (the Prometheus
textfile collector, a retraining DAG polling ``retrain_requests/``) never sees half a file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from monitoring.drift import MISSING_FEATURE_STATUSES, SEVERITY_RANK

RETRAIN_REQUEST_SCHEMA_VERSION = 1


def _umask() -> int:
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path``, then rename it into place.

    The file gets the mode a plain ``open()`` would give it (0666 minus the umask), not mkstemp's
    0600: the Prometheus textfile collector and retraining pollers usually run as another user.
    A failed write leaves no temp file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_safe(obj: Any) -> Any:
    """inf/NaN are not JSON: write them as strings so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(_json_safe(result), indent=2, allow_nan=False, default=str)


# ---------------------------------------------------------------- findings

def findings(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per moderate/high finding of a run (these become alert records)."""
    out: list[dict[str, Any]] = []
    base = {"run_id": result["run_id"], "created_at": result["created_at"],
            "model_version": result.get("model_version"), "window_start": result["window"]["start"],
            "window_end": result["window"]["end"]}
    if result["status"] == "no_data":
        out.append({**base, "kind": "no_data", "subject": "prediction_log", "severity": "moderate",
                    "message": "no predictions in the window: is serving logging?"})
        return out
    drift = result["drift"]
    for f in [*drift["features"], drift["prediction"]]:
        if f["severity"] == "none":
            continue
        kind = "prediction_drift" if f["feature"] == "prediction" else "feature_drift"
        if f["status"] in MISSING_FEATURE_STATUSES:  # a serving / logging fault, not drift: no retraining
            kind = "missing_feature"
            msg = (f"feature {f['feature']!r} of the reference profile is absent from the prediction log"
                   if f["status"] == "absent_from_log" else
                   f"feature {f['feature']!r} is null in every one of the window's {f['n']} predictions "
                   "(expired or unmaterialized features?)")
        else:
            stats = {k: f[k] for k in ("psi", "wasserstein_scaled", "ks_statistic", "js_distance", "p_value")
                     if k in f}
            msg = f"{f['feature']}: " + ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
        out.append({**base, "kind": kind, "subject": f["feature"], "severity": f["severity"], "message": msg})
    concept = result["concept"]
    if concept.get("severity", "none") != "none":
        out.append({**base, "kind": "concept_drift", "subject": "brier", "severity": concept["severity"],
                    "message": (f"Brier {concept['brier']['value']:.4f} "
                                f"[{concept['brier']['ci_low']:.4f}, {concept['brier']['ci_high']:.4f}] vs reference "
                                f"{concept['reference']['brier']:.4f} over {concept['n_markets']} resolved markets")})
    for kind in ("skew", "freshness"):
        for f in result.get(kind, {}).get("findings", []):
            out.append({**base, "kind": kind, **f})
    return out


def needs_retraining(result: dict[str, Any], found: list[dict[str, Any]]) -> list[str]:
    """Reasons to request retraining: high feature / prediction drift, or concept drift of any severity.

    Freshness and skew findings are pipeline faults: retraining on stale or skewed features
    would not fix them, so they alert but never request retraining. Neither does an empty window.
    """
    return [f"{f['kind']}:{f['subject']}:{f['severity']}" for f in found
            if (f["kind"] in ("feature_drift", "prediction_drift") and f["severity"] == "high")
            or f["kind"] == "concept_drift"]


def retrain_request(result: dict[str, Any], reasons: list[str], report_path: Path | None) -> dict[str, Any]:
    return {
        "schema_version": RETRAIN_REQUEST_SCHEMA_VERSION,
        "request_id": result["run_id"],
        "created_at": result["created_at"],
        "model_name": result.get("model_name"),
        "model_version": result.get("model_version"),
        "window": result["window"],
        "reasons": reasons,
        "severity": max((r.rsplit(":", 1)[1] for r in reasons), key=SEVERITY_RANK.__getitem__),
        "report": str(report_path) if report_path else None,
    }


# ---------------------------------------------------------------- Prometheus textfile

def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


WINDOW_END_GAUGE = "pm_monitoring_window_end_timestamp_seconds"


def window_end_of_textfile(text: str) -> float | None:
    """The window end a monitoring.prom file speaks of (None: none recorded, e.g. an older file)."""
    for line in text.splitlines():
        if line.startswith(WINDOW_END_GAUGE + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def prometheus_text(result: dict[str, Any]) -> str:
    """Gauges in the Prometheus text exposition format (for node_exporter's textfile collector)."""
    mv = _label(result.get("model_version") or "")
    lines: list[str] = []

    def gauge(name: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in {"model_version": mv, **labels}.items())
            v = float(value)
            text = "NaN" if math.isnan(v) else ("+Inf" if v == math.inf else repr(v))
            lines.append(f"{name}{{{lab}}} {text}")

    gauge("pm_monitoring_last_run_timestamp_seconds", "Unix time of the last monitoring run.",
          [({}, result["created_at_unix"])])
    gauge(WINDOW_END_GAUGE, "Unix time the monitored window ends (the values below are about that window).",
          [({}, datetime.fromisoformat(result["window"]["end"]).timestamp())])
    gauge("pm_monitoring_window_predictions", "Predictions of the monitored model in the window.",
          [({}, result.get("n_predictions", 0))])
    if result["status"] != "no_data":
        drift = result["drift"]
        ok = [f for f in drift["features"] if f["status"] == "ok"]
        gauge("pm_feature_psi", "Population stability index of a feature vs the reference.",
              [({"feature": f["feature"]}, f["psi"]) for f in ok])
        gauge("pm_feature_wasserstein_scaled", "Wasserstein-1 distance / reference std of a numeric feature.",
              [({"feature": f["feature"]}, f["wasserstein_scaled"]) for f in ok if f["kind"] == "numeric"])
        gauge("pm_feature_js_distance", "Jensen-Shannon distance of a categorical feature.",
              [({"feature": f["feature"]}, f["js_distance"]) for f in ok if f["kind"] == "categorical"])
        gauge("pm_feature_drift_severity", "0 none, 1 moderate, 2 high.",
              [({"feature": f["feature"]}, SEVERITY_RANK[f["severity"]]) for f in drift["features"]])
        pred = drift["prediction"]
        if pred["status"] == "ok":
            gauge("pm_prediction_psi", "PSI of the predicted probabilities.", [({}, pred["psi"])])
        gauge("pm_prediction_drift_severity", "0 none, 1 moderate, 2 high.", [({}, SEVERITY_RANK[pred["severity"]])])
        concept = result["concept"]
        gauge("pm_concept_resolved_markets", "Resolved markets scored in the window.", [({}, concept["n_markets"])])
        if concept["status"] == "ok":
            gauge("pm_concept_brier", "Brier score of resolved predictions in the window.",
                  [({}, concept["brier"]["value"])])
            gauge("pm_concept_brier_reference", "Validation Brier score of the model.",
                  [({}, concept["reference"]["brier"])])
        gauge("pm_concept_drift_severity", "0 none, 1 moderate, 2 high.",
              [({}, SEVERITY_RANK[concept.get("severity", "none")])])
    # The Feast checks (--feature-service): 0 when not asked for or skipped, so a dashboard tells
    # "fresh" from "not checked".
    fresh, skew = result.get("freshness") or {}, result.get("skew") or {}
    gauge("pm_feature_checks_ran", "1 if online freshness and training-serving skew were checked in this run.",
          [({}, 1.0 if fresh.get("status") == "ok" else 0.0)])
    if fresh.get("status") == "ok":
        views = sorted(fresh["views"].items())
        gauge("pm_feature_view_newest_age_seconds",
              "Age of the newest online value of a feature view (if even the newest is old, the pipeline stopped).",
              [({"feature_view": v}, d["newest_age_seconds"]) for v, d in views])
        gauge("pm_feature_view_expired_fraction", "Share of served markets whose online value is past the view's TTL.",
              [({"feature_view": v}, d["expired_fraction"]) for v, d in views])
        gauge("pm_feature_view_not_found_fraction", "Share of served markets the online store holds no value for.",
              [({"feature_view": v}, d["not_found_fraction"]) for v, d in views])
        gauge("pm_feature_view_freshness_severity", "0 none, 1 moderate, 2 high.",
              [({"feature_view": v}, SEVERITY_RANK[d["severity"]]) for v, d in views])
    if skew.get("status") == "ok":
        features = sorted(skew["features"].items())
        gauge("pm_skew_mismatch_fraction", "Share of sampled (market, feature) values differing online vs offline.",
              [({}, skew["mismatch_fraction"])])
        gauge("pm_skew_feature_mismatch_fraction", "Share of sampled markets whose online value differs from offline.",
              [({"feature": f}, d["mismatch_fraction"]) for f, d in features])
        gauge("pm_skew_severity", "0 none, 1 moderate, 2 high (worst feature).",
              [({}, max((SEVERITY_RANK[d["severity"]] for _, d in features), default=0))])
    gauge("pm_monitoring_retrain_requested", "1 if this run requested retraining.",
          [({}, 1.0 if result.get("retrain_request") else 0.0)])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _plots(result: dict[str, Any]) -> list[tuple[str, str]]:
    # Figure without pyplot: no global state, no GUI backend, and a much lighter import.
    import numpy as np
    from matplotlib.figure import Figure

    out: list[tuple[str, str]] = []
    drift = result["drift"]
    panels = [f for f in [drift["prediction"], *drift["features"]] if f.get("status") == "ok"]
    if panels:
        cols = 4
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(4 * cols, 2.6 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, f in zip(axes.ravel(), panels):
            ref, cur = np.asarray(f["bins"]["reference"]), np.asarray(f["bins"]["current"])
            x = np.arange(ref.size)
            ax.bar(x - 0.2, ref, 0.4, label="reference", color="#7a9cc6")
            ax.bar(x + 0.2, cur, 0.4, label="window", color="#e08a4f")
            ax.set_title(f"{f['feature']} [{f['severity']}] PSI={f['psi']:.3f}", fontsize=9,
                         color={"none": "black", "moderate": "#b8860b", "high": "#b22222"}[f["severity"]])
            labels = f["bins"].get("labels") or [*(f"b{i}" for i in range(ref.size - 1)), "NA"]
            ax.set_xticks(x, labels, rotation=60, fontsize=6)
        for ax in axes.ravel()[len(panels):]:
            ax.axis("off")
        axes.ravel()[0].legend(fontsize=7)
        fig.tight_layout()
        out.append(("Distributions: reference bins vs window (numeric: reference deciles + missing)", _png(fig)))
        # PSI per feature at a glance, against the moderate / high thresholds of this run.
        ranked = sorted(panels, key=lambda f: f["psi"])
        fig = Figure(figsize=(8, 0.3 * len(ranked) + 1.2))
        ax = fig.subplots()
        colors = {"none": "#7a9cc6", "moderate": "#e0b84f", "high": "#b22222"}
        ax.barh([f["feature"] for f in ranked], [f["psi"] for f in ranked],
                color=[colors[f["severity"]] for f in ranked])
        limits = result.get("thresholds", {})
        for key, style in (("psi_moderate", ":"), ("psi_high", "--")):
            if key in limits:
                ax.axvline(limits[key], color="black", ls=style, lw=0.8, label=f"{key} = {limits[key]}")
        ax.set(xlabel="PSI (reference-quantile bins)", title="PSI per feature (colour: overall severity)")
        ax.tick_params(axis="y", labelsize=7)
        if limits:
            ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(("PSI per feature", _png(fig)))
    concept = result["concept"]
    if concept.get("status") == "ok":
        fig = Figure(figsize=(11, 3.6))
        a1, a2 = fig.subplots(1, 2)
        rel = concept["reliability"]
        a1.plot([0, 1], [0, 1], "k--", lw=0.8)
        a1.scatter(rel["mean_predicted"], rel["observed"], s=np.sqrt(rel["count"]) * 4, color="#e08a4f")
        a1.set(xlabel="mean predicted", ylabel="observed frequency", title="Reliability (window)")
        t = [b["bucket_start"][:10] for b in concept["over_time"]]
        v = [b["brier"]["value"] for b in concept["over_time"]]
        lo = [b["brier"]["ci_low"] for b in concept["over_time"]]
        hi = [b["brier"]["ci_high"] for b in concept["over_time"]]
        a2.fill_between(range(len(t)), lo, hi, alpha=0.3, color="#e08a4f")
        a2.plot(range(len(t)), v, marker="o", color="#e08a4f", label="window")
        a2.axhline(concept["reference"]["brier"], color="#7a9cc6", ls="--", label="reference")
        a2.set_xticks(range(len(t)), t, rotation=45, fontsize=7)
        a2.set(ylabel="Brier", title=f"Brier over time ({int(concept['confidence'] * 100)}% market-bootstrap CI)")
        a2.legend(fontsize=7)
        fig.tight_layout()
        out.append(("Concept drift", _png(fig)))
    return out


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr class='sev-" + html.escape(str(r.get("severity", "none"))) + "'>"
                   + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(result: dict[str, Any], found: list[dict[str, Any]]) -> str:
    """One self-contained HTML page (plots inlined as base64 PNG)."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Monitoring report "
        f"{e(result['run_id'])}</title><style>body{{font-family:sans-serif;margin:2em;}}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".sev-moderate{background:#fff4c2}.sev-high{background:#f8c9c4}</style></head><body>",
        f"<h1>Monitoring report {e(result['run_id'])}</h1>",
        f"<p>Model {e(str(result.get('model_name')))} version {e(str(result.get('model_version')))} · window "
        f"{e(result['window']['start'])} → {e(result['window']['end'])} · {result.get('n_predictions', 0)} "
        f"predictions · status <b>{e(result['status'])}</b> · overall severity <b>{e(result['severity'])}</b></p>",
        "<h2>Findings</h2>",
        _table(found, ["kind", "subject", "severity", "message"]) if found else "<p>None.</p>",
    ]
    if result.get("retrain_request"):
        parts.append(f"<p><b>Retraining requested:</b> {e(result['retrain_request'])}</p>")
    if result["status"] != "no_data":
        drift = result["drift"]
        parts += ["<h2>Feature and prediction drift</h2>",
                  f"<p>Family-wise α={result['thresholds']['alpha']} over {drift['n_tests']} tests "
                  f"(per test {drift['alpha_per_test']:.2g}).</p>",
                  _table([drift["prediction"], *drift["features"]],
                         ["feature", "kind", "status", "severity", "effect_severity", "n", "missing_fraction", "psi",
                          "wasserstein_scaled", "ks_statistic", "js_distance", "p_value"])]
        concept = result["concept"]
        parts.append("<h2>Concept drift (resolved markets)</h2>")
        if concept["status"] == "ok":
            rows = [{"metric": k, "severity": concept["severity"] if k == "brier" else "none",
                     "window": concept[k]["value"], "ci_low": concept[k]["ci_low"], "ci_high": concept[k]["ci_high"],
                     "reference": concept["reference"][k]} for k in ("brier", "log_loss", "ece")]
            parts.append(_table(rows, ["metric", "window", "ci_low", "ci_high", "reference"]))
        else:
            parts.append(f"<p>{e(concept['status'])}: {concept['n_markets']} resolved markets "
                         f"(need {concept['min_resolved_markets']}).</p>")
        for kind in ("freshness", "skew"):
            if kind in result:
                body = e(json.dumps(_json_safe(result[kind]), indent=1))
                parts.append(f"<h2>{kind.capitalize()}</h2><pre>{body}</pre>")
        for title, img in _plots(result):
            parts += [f"<h2>{e(title)}</h2>", img]
    parts.append(f"<h2>Thresholds</h2><pre>{e(json.dumps(result['thresholds'], indent=1))}</pre></body></html>")
    return "\n".join(parts)
