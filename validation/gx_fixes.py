"""Fixes for great_expectations 1.24.1 Data Docs bugs that our validation pages hit.

1. Severity column. GX can add columns to a validation page's table from each expectation's
   ``meta["attributes"]`` (the suite meta's ``notes`` in the ``renderer.diagnostic.meta_properties``
   format names them); we use it for the "Severity" column that tells refusing checks from
   warning-only ones (``validation.project.DOCS_META_PROPERTIES``). To do that, GX's page renderer
   writes a render-only ``meta_properties_to_render`` entry into each result's configuration
   kwargs, and later rebuilds the expectation from those kwargs
   (``ExpectationConfiguration.to_domain_obj``), which GX 1.x expectations (pydantic models that
   forbid unknown fields) refuse: the page is not written at all. The fix leaves that one
   render-only entry out when rebuilding the expectation; configurations without it are untouched.

2. Batch values in pages. GX escapes expectation parameters (since 1.18.1) but puts the values
   it found in the batch into the page as they are: the unexpected-values table (values and the
   rows' key columns), the observed value, and an exception's traceback. Page templates do not
   autoescape, so a value such as ``<img src=x onerror=...>`` in a refused batch became markup
   in the page (and ran in the reviewer's browser). The fix HTML-escapes what those three
   diagnostic renderers return for the validation-results table (the only place GX uses them);
   content GX builds itself (string templates, whose parameters it escapes) is left to GX.

Applied once, by :func:`validation.project.import_gx`; tests check the pages and the unchanged cases.
"""

from __future__ import annotations

import html
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


def escape_text(value: Any) -> str:
    """A batch value as HTML text, shown as GX would print it (``str``), as GX escapes parameters."""
    return html.escape(str(value), quote=False)


def _escape_cells(cells: list) -> list:
    """Table cells: renderer-built content as it is, every value (also a dict or list value) as escaped text.

    A list cell stays a list (GX shows each element in its own span).
    """
    from great_expectations.render.components import RenderedContent

    return [cell if isinstance(cell, RenderedContent)
            else _escape_cells(cell) if isinstance(cell, list)
            else escape_text(cell) for cell in cells]


def _escape_code_templates(blocks: Any) -> None:
    """Collapsed ``<code>`` blocks (GX's exception traceback, its unexpected-index query): the text is the
    template itself, which GX does not escape."""
    from great_expectations.render.components import CollapseContent, RenderedStringTemplateContent

    for block in blocks if isinstance(blocks, list) else [blocks]:
        if isinstance(block, CollapseContent):
            inner = block.collapse if isinstance(block.collapse, list) else [block.collapse]
            for item in inner:
                if isinstance(item, RenderedStringTemplateContent) and "template" in item.string_template:
                    item.string_template["template"] = escape_text(item.string_template["template"])


def _escaped_output(renderer_type: str, renderer: Any) -> Any:
    from great_expectations.render import LegacyDiagnosticRendererType
    from great_expectations.render.components import RenderedTableContent

    def render(*args: Any, **kwargs: Any) -> Any:
        output = renderer(*args, **kwargs)
        if renderer_type == LegacyDiagnosticRendererType.OBSERVED_VALUE:
            return escape_text(output) if isinstance(output, str) else output
        for block in output if isinstance(output, list) else [output] if output is not None else []:
            if isinstance(block, RenderedTableContent):
                block.table = [_escape_cells(row) if isinstance(row, list) else escape_text(row)
                               for row in block.table]
                if block.header_row:
                    block.header_row = _escape_cells(block.header_row)
        _escape_code_templates(output)
        return output

    render.__wrapped__ = renderer  # type: ignore[attr-defined]
    return render


def _get_renderer_impl_escaping_batch_values(original):
    from great_expectations.render import LegacyDiagnosticRendererType

    escaped_types = {LegacyDiagnosticRendererType.UNEXPECTED_TABLE, LegacyDiagnosticRendererType.OBSERVED_VALUE,
                     LegacyDiagnosticRendererType.UNEXPECTED_STATEMENT}

    def get_renderer_impl(object_name: str, renderer_type: str) -> Any:
        impl = original(object_name=object_name, renderer_type=renderer_type)
        if impl is None or renderer_type not in escaped_types:
            return impl
        return impl._replace(renderer=_escaped_output(renderer_type, impl.renderer))

    get_renderer_impl.__wrapped__ = original  # type: ignore[attr-defined]
    return get_renderer_impl


def apply() -> None:
    """Install the fixes (idempotent). Call after ``import great_expectations``."""
    global _APPLIED
    if _APPLIED:
        return
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.render.renderer.content_block import validation_results_table_content_block as table

    original = ExpectationConfiguration.to_domain_obj
    ExpectationConfiguration.to_domain_obj = _to_domain_obj_without_render_only_kwargs(original)  # type: ignore
    # The validation-results table looks the diagnostic renderers up through its own module's name.
    table.get_renderer_impl = _get_renderer_impl_escaping_batch_values(table.get_renderer_impl)
    _APPLIED = True
