"""A checkpoint action that updates Data Docs once per checkpoint run.

GX's ``UpdateDataDocsAction`` rebuilds the site (validation page, suite page and the whole
index, which re-reads up to ``validation_results_limit`` stored results) once *per validation
result*. This action builds the pages of all results of the run in one pass (one result per
checkpoint today, one suite per table; the pass still holds if a table gets more suites), and
each suite's page once per process (suites only change with ``validation init``).

Importing this module registers the action type with GX (``validation.project.import_gx``
does it before any checkpoint is loaded); it imports great_expectations, so import it lazily.
"""

from __future__ import annotations

from typing import List, Literal

from great_expectations.checkpoint.actions import ActionContext, DataDocsAction
from great_expectations.checkpoint.checkpoint import CheckpointResult
from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

ACTION_TYPE = "pm_update_data_docs"


class UpdateDataDocsOncePerRunAction(DataDocsAction):
    """Add every validation result of a checkpoint run to Data Docs in a single site build."""

    type: Literal["pm_update_data_docs"] = "pm_update_data_docs"
    site_names: List[str] = []

    def run(self, checkpoint_result: CheckpointResult, action_context: ActionContext | None = None) -> dict:
        resources: list = list(checkpoint_result.run_results)
        context_key = id(self._resolve_context().context)
        for result in checkpoint_result.run_results.values():
            suite_key = (context_key, result.suite_name)
            if suite_key not in _SUITE_PAGES_BUILT:
                resources.append(ExpectationSuiteIdentifier(name=result.suite_name))
                _SUITE_PAGES_BUILT.add(suite_key)
        self._build_data_docs(site_names=self.site_names or None, resource_identifiers=resources)
        pages: dict = {}
        for key in checkpoint_result.run_results:
            for site in self._get_docs_sites_urls(resource_identifier=key, site_names=self.site_names or None):
                pages.setdefault(str(key), {})[site["site_name"]] = site["site_url"]
        return pages


# (id of the data context, suite name) whose suite page this process has built.
_SUITE_PAGES_BUILT: set[tuple[int, str]] = set()
