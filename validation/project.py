"""The committed GX file project in ``settings.gx_dir`` and the per-process context cache.

Layout (docs/data_validation.md):
- ``gx/great_expectations.yml``, ``gx/expectations/``, ``gx/validation_definitions/``,
  ``gx/checkpoints/``: committed, written by :func:`write_project` (``python -m validation init``)
  from the suites in ``validation.suites``; a new project also gets the committed
  ``gx/plugins/custom_data_docs/styles/`` file (GX inlines it into every page: readable offline).
- Generated output (validation results, Data Docs) goes to :func:`output_dir`, i.e.
  ``settings.data_dir / "gx"``, via the ``${pm_gx_output_dir}`` substitution in the yml, so a
  test's isolated ``settings`` also isolates its Data Docs. ``gx/uncommitted/`` (GX's own
  scratch: config_variables.yml) stays git-ignored.

Great Expectations is imported only inside functions: it takes seconds to import.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import REPO_ROOT, Settings
from validation.suites import (
    GX_SEVERITY,
    TABLES,
    TRAINING_SET,
    SuiteSpec,
    all_suites,
    checkpoint_name,
    suites_for,
)

# Analytics off: written into the environment before GX is imported (never read from it here).
GX_ANALYTICS_ENABLED = False
DATASOURCE_NAME = "pm_frames"
BATCH_DEFINITION_NAME = "whole_frame"
DOCS_SITE_NAME = "local_site"
# GX inlines this file of the project (plugins_directory) into every Data Docs page; a new project
# gets the committed one.
DOCS_STYLES_PATH = Path("plugins", "custom_data_docs", "styles", "data_docs_custom_styles.css")
DOCS_STYLES_SOURCE = REPO_ROOT / "gx" / DOCS_STYLES_PATH
OUTPUT_DIR_VARIABLE = "pm_gx_output_dir"
# Few examples per failing expectation, each with its row's key columns: enough for a
# quarantine reason ("a few example rows"), cheap to compute.
EXAMPLE_COUNT = 5
KEY_COLUMNS: dict[str, list[str]] = {
    "markets": ["market_id", "updated_at"],
    "price_snapshots": ["market_id", "ts"],
    "polls": ["market_id", "ts"],
    TRAINING_SET: ["market_id", "ts"],
}


def result_format(table: str) -> dict[str, Any]:
    return {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLE_COUNT,
            "unexpected_index_column_names": KEY_COLUMNS[table], "return_unexpected_index_query": False}

GX_YML = f"""\
# Great Expectations project of the prediction-market platform (GX 1.x file context).
# Written by `python -m validation init`; the suites themselves live in validation/suites.py.
# Generated output (validation results, Data Docs) goes to ${{{OUTPUT_DIR_VARIABLE}}}, which
# validation/project.py sets to <settings.data_dir>/gx at run time (runtime_environment).
config_version: 4
analytics_enabled: false
progress_bars:
  globally: false
config_variables_file_path: uncommitted/config_variables.yml
plugins_directory: plugins/

stores:
  expectations_store:
    class_name: ExpectationsStore
    store_backend:
      class_name: TupleFilesystemStoreBackend
      base_directory: expectations/

  validation_results_store:
    class_name: ValidationResultsStore
    store_backend:
      class_name: TupleFilesystemStoreBackend
      base_directory: ${{{OUTPUT_DIR_VARIABLE}}}/validations/

  checkpoint_store:
    class_name: CheckpointStore
    store_backend:
      class_name: TupleFilesystemStoreBackend
      suppress_store_backend_id: true
      base_directory: checkpoints/

  validation_definition_store:
    class_name: ValidationDefinitionStore
    store_backend:
      class_name: TupleFilesystemStoreBackend
      base_directory: validation_definitions/

expectations_store_name: expectations_store
validation_results_store_name: validation_results_store
checkpoint_store_name: checkpoint_store

data_docs_sites:
  {DOCS_SITE_NAME}:
    class_name: SiteBuilder
    show_how_to_buttons: false
    store_backend:
      # Pages replaced atomically (validation/gx_store.py): a reader never sees half a page.
      module_name: validation.gx_store
      class_name: AtomicTupleFilesystemStoreBackend
      base_directory: ${{{OUTPUT_DIR_VARIABLE}}}/data_docs/{DOCS_SITE_NAME}/
    site_index_builder:
      class_name: DefaultSiteIndexBuilder
      # The index is rebuilt on every checkpoint run, re-reading these stored results: bound that cost.
      validation_results_limit: 20
    site_section_builders:
      validations:
        # No limit for the pages themselves: GX applies the index's limit here too by default, and
        # would then skip the page of a run older than the newest 20 (an older validation time, clock
        # skew between workers) while the gate reports that page.
        validation_results_limit: 0
"""

# Data Docs show GX's severity of each expectation in an extra "Severity" column of the
# validation page: GX renders the expectation meta ``attributes`` named by the suite meta's
# ``notes`` in the "meta properties" format (render/renderer/page_renderer.py; needs
# validation/gx_fixes.py in GX 1.24.1).
SEVERITY_COLUMN = "Severity"
SEVERITY_LABELS = {"critical": "critical (refuses)", "warning": "warning (reported only)"}
DOCS_META_PROPERTIES = {"format": "renderer.diagnostic.meta_properties",
                        "content": {SEVERITY_COLUMN: "severity"}}


class ProjectNotInitialized(RuntimeError):
    """The GX project in settings.gx_dir is missing or lacks a checkpoint."""


def import_gx():
    """Import great_expectations with analytics disabled (slow: call only where needed)."""
    os.environ["GX_ANALYTICS_ENABLED"] = str(GX_ANALYTICS_ENABLED)
    import great_expectations as gx

    from validation import gx_actions, gx_fixes, speedups  # noqa: F401 - gx_actions registers our action type

    speedups.apply()
    gx_fixes.apply()
    return gx


def output_dir(settings: Settings) -> Path:
    return settings.data_dir / "gx"


def docs_index(settings: Settings) -> Path:
    """The stable path of the Data Docs home page."""
    return output_dir(settings) / "data_docs" / DOCS_SITE_NAME / "index.html"


def _open_context(gx_dir: Path, out_dir: Path):
    gx = import_gx()
    if not (gx_dir / "great_expectations.yml").is_file():
        raise ProjectNotInitialized(
            f"No GX project at {gx_dir} (great_expectations.yml missing): run `python -m validation init`.")
    out_dir.mkdir(parents=True, exist_ok=True)
    return gx.get_context(mode="file", context_root_dir=str(gx_dir),
                          runtime_environment={OUTPUT_DIR_VARIABLE: str(out_dir)})


@dataclass
class Project:
    """An open GX context and its checkpoints, built once per (gx_dir, output dir) per process."""

    context: Any
    checkpoints: dict[str, Any]
    settings: Settings


_CACHE: dict[tuple[Path, Path], Project] = {}
_LOCK = threading.Lock()


def get_project(settings: Settings) -> Project:
    """The cached project for these settings (opening a context and loading checkpoints costs ~1 s)."""
    key = (settings.gx_dir, output_dir(settings))
    with _LOCK:
        project = _CACHE.get(key)
        if project is None:
            context = _open_context(*key)
            checkpoints = {}
            for table in (*TABLES, TRAINING_SET):
                name = checkpoint_name(table)
                try:
                    checkpoints[table] = context.checkpoints.get(name)
                except Exception as exc:  # GX raises several store errors for a missing checkpoint
                    raise ProjectNotInitialized(
                        f"GX checkpoint {name!r} missing in {settings.gx_dir}: run `python -m validation init`"
                        f" ({type(exc).__name__}: {exc})") from exc
            project = Project(context=context, checkpoints=checkpoints, settings=settings)
            _CACHE[key] = project
        return project


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def build_suite(spec: SuiteSpec):
    """The GX ExpectationSuite for a suite spec (severity and contract rule in each expectation's meta)."""
    gx = import_gx()
    expectations = [
        # notes: shown on the suite's Data Docs page; meta rule/severity: read back by the gate;
        # meta attributes: the Severity column of the validation page.
        getattr(gx.expectations, e.type)(
            **e.kwargs, notes=e.rule, severity=GX_SEVERITY[e.severity],
            meta={"rule": e.rule, "severity": e.severity,
                  "attributes": {"severity": SEVERITY_LABELS[GX_SEVERITY[e.severity]]}})
        for e in spec.expectations
    ]
    return gx.ExpectationSuite(name=spec.name, expectations=expectations,
                               meta={"table": spec.table, "notes": DOCS_META_PROPERTIES})


def _suite_content(suite: Any) -> Any:
    """What a suite says, without GX's generated ids (so unchanged suites are not rewritten)."""
    expectations = [(c.type, c.kwargs, c.meta, c.notes, str(c.severity))
                    for c in (e.configuration for e in suite.expectations)]
    return json.loads(json.dumps([suite.meta, expectations], sort_keys=True, default=str))


def _get_or_none(collection: Any, name: str) -> Any:
    try:
        return collection.get(name)
    except Exception:  # GX raises store-specific errors for a missing name
        return None


def write_project(gx_dir: Path, settings: Settings) -> list[str]:
    """Write the committed GX project from validation/suites.py; returns what changed.

    Idempotent: objects whose content already matches the code are left alone, so rerunning
    it does not churn GX's generated ids in git.
    """
    gx = import_gx()
    from validation.gx_actions import UpdateDataDocsOncePerRunAction

    gx_dir.mkdir(parents=True, exist_ok=True)
    yml = gx_dir / "great_expectations.yml"
    if not yml.is_file():
        yml.write_text(GX_YML)
    (gx_dir / ".gitignore").write_text("uncommitted/\n")
    written: list[str] = []
    styles, wanted_styles = gx_dir / DOCS_STYLES_PATH, DOCS_STYLES_SOURCE.read_text()
    if not styles.is_file() or styles.read_text() != wanted_styles:
        styles.parent.mkdir(parents=True, exist_ok=True)
        styles.write_text(wanted_styles)
        written.append(f"Data Docs styles {DOCS_STYLES_PATH}")
    context = _open_context(gx_dir, output_dir(settings))

    datasource = _get_or_none(context.data_sources, DATASOURCE_NAME) or context.data_sources.add_pandas(
        DATASOURCE_NAME)
    for table in (*TABLES, TRAINING_SET):
        try:
            asset = datasource.get_asset(table)
        except LookupError:
            asset = datasource.add_dataframe_asset(name=table)
        try:
            batch_definition = asset.get_batch_definition(BATCH_DEFINITION_NAME)
        except (KeyError, LookupError):
            batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)

        validation_definitions = []
        changed = False
        for spec in suites_for(table):
            wanted = build_suite(spec)
            suite = _get_or_none(context.suites, spec.name)
            if suite is None or _suite_content(suite) != _suite_content(wanted):
                suite = context.suites.add_or_update(wanted)
                written.append(f"suite {spec.name} ({len(spec.expectations)} expectations)")
                changed = True
            vd = _get_or_none(context.validation_definitions, spec.name)
            if changed or vd is None or vd.suite.name != spec.name or vd.data.name != batch_definition.name:
                vd = context.validation_definitions.add_or_update(
                    gx.ValidationDefinition(name=spec.name, data=batch_definition, suite=suite))
                written.append(f"validation definition {spec.name}")
                changed = True
            validation_definitions.append(vd)
        checkpoint = gx.Checkpoint(
            name=checkpoint_name(table),
            validation_definitions=validation_definitions,
            actions=[UpdateDataDocsOncePerRunAction(name="update_data_docs", site_names=[DOCS_SITE_NAME])],
            result_format=result_format(table),
        )
        existing = _get_or_none(context.checkpoints, checkpoint.name)
        if changed or existing is None or _checkpoint_content(existing) != _checkpoint_content(checkpoint):
            context.checkpoints.add_or_update(checkpoint)
            written.append(f"checkpoint {checkpoint.name}")
    # Suites no longer in code (and their validation definitions, first: they reference them) go,
    # so the committed project holds exactly what validation/suites.py says.
    wanted = {spec.name for spec in all_suites()}
    for vd in list(context.validation_definitions.all()):
        if vd.name not in wanted:
            context.validation_definitions.delete(vd.name)
            written.append(f"removed validation definition {vd.name}")
    for suite in list(context.suites.all()):
        if suite.name not in wanted:
            context.suites.delete(suite.name)
            written.append(f"removed suite {suite.name}")
    clear_cache()
    return written or ["GX project already up to date"]


def _checkpoint_content(checkpoint: Any) -> Any:
    return json.loads(json.dumps({
        "validation_definitions": [vd.name for vd in checkpoint.validation_definitions],
        "actions": [(a.type, a.name, getattr(a, "site_names", None)) for a in checkpoint.actions],
        "result_format": checkpoint.result_format,
    }, sort_keys=True, default=str))


def stored_suite_specs(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """What the committed suites contain (type, kwargs, meta, notes, GX severity), for the drift test."""
    context = get_project(settings).context
    out = {}
    for spec in all_suites():
        suite = context.suites.get(spec.name)
        out[spec.name] = [
            {"type": c.type, "kwargs": c.kwargs, "meta": c.meta, "notes": c.notes,
             "severity": str(getattr(c.severity, "value", c.severity))}
            for c in (x.configuration for x in suite.expectations)
        ]
    return out
