"""A fix for a great_expectations 1.24.1 Data Docs bug that our validation pages hit.

GX can add columns to a validation page's table from each expectation's ``meta["attributes"]``
(the suite meta's ``notes`` in the ``renderer.diagnostic.meta_properties`` format names them);
we use it for the "Severity" column that tells refusing checks from warning-only ones
(``validation.project.DOCS_META_PROPERTIES``). To do that, GX's page renderer writes a
render-only ``meta_properties_to_render`` entry into each result's configuration kwargs, and
later rebuilds the expectation from those kwargs (``ExpectationConfiguration.to_domain_obj``),
which GX 1.x expectations (pydantic models that forbid unknown fields) refuse: the page is not
written at all. The fix leaves that one render-only entry out when rebuilding the expectation;
configurations without it are untouched.

Applied once, by :func:`validation.project.import_gx`; tests check the page and the unchanged cases.
"""

from __future__ import annotations

from typing import Any

RENDER_ONLY_KWARG = "meta_properties_to_render"

_APPLIED = False


def _to_domain_obj_without_render_only_kwargs(original):
    def to_domain_obj(self: Any) -> Any:
        if RENDER_ONLY_KWARG not in self.kwargs:
            return original(self)
        stripped = type(self)(
            type=self.type, kwargs={k: v for k, v in self.kwargs.items() if k != RENDER_ONLY_KWARG},
            meta=self.meta, notes=self.notes, description=self.description, severity=self.severity,
            id=self.id, rendered_content=self.rendered_content)
        return original(stripped)

    to_domain_obj.__wrapped__ = original  # type: ignore[attr-defined]
    return to_domain_obj


def apply() -> None:
    """Install the fix (idempotent). Call after ``import great_expectations``."""
    global _APPLIED
    if _APPLIED:
        return
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    original = ExpectationConfiguration.to_domain_obj
    ExpectationConfiguration.to_domain_obj = _to_domain_obj_without_render_only_kwargs(original)  # type: ignore
    _APPLIED = True
