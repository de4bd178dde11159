"""Find a batch's table files and read each into a typed frame, reporting every conversion problem.

A batch entry named as a table (``polls.parquet``) that is not a regular file after following a
link (a dataset directory of part files, a dangling link, a FIFO, a device) is an unreadable
file, judged from ``stat`` alone (a FIFO is never opened). A CSV holding a NUL byte is refused
(``unreadable_file``, naming the line): pandas' parser would silently end the cell there.

Typing rules (contract: "a value that cannot be converted to the column's type without loss"):

* CSV is read as UTF-8 text, every cell a string; an empty cell is null, except in string
  columns, where it is the empty string (CSV cannot tell the two apart).
* string columns: Parquet strings as they are; other Parquet types are refused (``not_convertible``)
  rather than guessed (``1`` and ``"01"`` would collide as market ids).
* float columns: numbers, or text that parses as a number. Text is converted by Python's
  correctly rounded ``float()``, so a CSV written with round-trip precision types exactly
  like the Parquet it came from (same batch_id). An integer (Parquet integer type, or integer
  text) that a 64-bit float cannot hold exactly (beyond 2**53) is refused: that conversion loses.
* int columns: integers, or floats/text with no fractional part (``1.0`` -> 1; ``1.5`` refused).
* timestamps: ISO-8601 text with ``Z`` (RFC 3339 also allows ``z``, and ``t`` for the separator) or
  an offset (``+hh:mm``, ``+hhmm``, ``+hh``; other forms such as ``+02:00:00`` are refused), or a Parquet
  timestamp with a time zone; converted to UTC at microsecond precision. Naive text / naive
  Parquet timestamps are refused (``naive_timestamp``) unless ``assume_utc``. Sub-microsecond
  values would lose precision and are refused. Values before 2000-01-01 or after
  ``now + 1 day`` are refused, except that ``markets.resolution_date`` (a scheduled date: an
  open market's is in the future) may be as late as 2262-04-11 (pandas' nanosecond range,
  which the gate and Feast use); text after that is still parsed, so both formats refuse it
  by the same rule.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ingestion.contract import (
    EARLIEST_TIMESTAMP, MAX_FUTURE, N_EXAMPLES, SCHEMAS, TABLES, ColumnSpec, TypedTable, Violation, _flag,
    examples_of,
)

TABLE_SUFFIXES = (".parquet", ".csv")
# Timestamps that name a *scheduled* time, legitimately far in the future for an open market,
# so the "more than one day in the future" rule (meant for observed times) does not apply.
SCHEDULED_COLUMNS = frozenset({("markets", "resolution_date")})
# Their upper limit instead: the last instant pandas, the validation gate and Feast can hold (nanoseconds).
LATEST_SCHEDULED = pd.Timestamp.max.tz_localize("UTC").floor("us")
# An ISO-8601 time followed by Z or a numeric offset (a bare date has no zone).
_AWARE_RE = r"[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
# A time (at least hours and minutes) followed by a sign and a digit: meant as an offset. If it is
# not one of ISO 8601's forms above (e.g. "+02:00:00", seconds), it is refused as such, not as naive.
_OFFSET_LIKE_RE = r"[T ]\d{2}:?\d{2}(?::?\d{2}(?:[.,]\d+)?)?\s*[+-]\d"
# An ISO-8601 calendar date first (extended or basic), then nothing or a time: words such as
# "now" or "today", which pandas would turn into the wall-clock time, are not timestamps.
_ISO_DATE_RE = r"^\d{4}-?\d{2}-?\d{2}(?:$|[Tt ])"
# An integer written as text: converted exactly with int(), not through a float (2**53 + 1 stays itself).
_INT_TEXT_RE = r"^[+-]?\d+$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class BatchFiles:
    """The table files of a batch directory, plus what was ignored or ambiguous."""

    tables: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


def discover(batch_dir: Path) -> BatchFiles:
    found = BatchFiles()
    by_table: dict[str, list[Path]] = {}
    for path in sorted(batch_dir.iterdir()):
        # Named as a table, it is that table whatever it is (a dataset directory, a dangling link, a
        # FIFO): read_table refuses it, rather than the batch being published without the table.
        if path.stem in TABLES and path.suffix in TABLE_SUFFIXES:
            by_table.setdefault(path.stem, []).append(path)
        else:
            kind = "directory" if path.is_dir() else "file"
            found.warnings.append(f"{path.name}: not a table file (expected markets/price_snapshots/polls "
                                  f".parquet or .csv); {kind} ignored")
    for table, paths in by_table.items():
        if len(paths) > 1:
            found.violations.append(Violation(
                ", ".join(p.name for p in paths), table, "ambiguous_table", None, 0,
                f"table {table!r} is given both as CSV and Parquet; send exactly one file per table"))
        else:
            found.tables[table] = paths[0]
    if not by_table:
        found.violations.append(Violation(
            batch_dir.name, None, "no_tables", None, 0,
            "the batch directory holds no table file (markets, price_snapshots, polls as .parquet or .csv)"))
    return found


def _read_raw(path: Path, table: str) -> tuple[pd.DataFrame | None, pa.Schema | None, list[Violation]]:
    """The file as a DataFrame (CSV: all strings) or a violation if it cannot be read."""
    name = path.name
    not_a_file = _not_a_regular_file(path)
    if not_a_file:
        return None, None, [Violation(name, table, "unreadable_file", None, 0,
                                      f"{name} is not a regular file: it is {not_a_file}")]
    try:
        if path.suffix == ".csv":
            nul = _csv_nul_violation(path, table)
            if nul:
                return None, None, [nul]
            shape_problems = _csv_shape_violations(path, table)
            if shape_problems:
                return None, None, shape_problems
            # utf-8-sig: UTF-8, tolerating the byte-order mark spreadsheet exports put first.
            # index_col=False: a first column is never taken as the index (pandas does that
            # when rows have one field more than the header; the shape check refuses those).
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                              index_col=False)
            # An empty cell is a null, except in string columns where it is the empty string.
            strings = {c.name for c in SCHEMAS[table] if c.kind == "string"}
            for column in raw.columns:
                if column not in strings:
                    raw[column] = raw[column].replace("", None)
            schema = None
        else:
            arrow = pq.read_table(path)
            schema = arrow.schema
            # integer_object_nulls: an integer column with nulls stays exact (Python ints), not float64.
            raw = arrow.to_pandas(ignore_metadata=True, integer_object_nulls=True)
    except pd.errors.EmptyDataError:
        return None, None, [Violation(name, table, "empty_file", None, 0,
                                      "the file is empty (no header, no rows)")]
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unreadable
        return None, None, [Violation(name, table, "unreadable_file", None, 0,
                                      f"cannot read the file: {type(exc).__name__}: {exc}"[:500])]
    raw = raw.reset_index(drop=True)
    if raw.empty:
        return None, None, [Violation(name, table, "empty_file", None, 0, "the file has no data rows")]
    return raw, schema, []


def _not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is if it is not a regular file (a link is followed), else None.

    From ``stat`` alone: opening a FIFO would block until some writer comes, and a directory
    would be read by pyarrow as a dataset of whatever files it holds.
    """
    link = f"a symbolic link to {os.readlink(path)!r}, which is " if path.is_symlink() else ""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{link}part of a symbolic link loop"
        if exc.errno == errno.ENOENT:
            return f"{link}missing"
        return f"{link}not accessible ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory (a dataset of part files is not a table file; send the table "
                            "as one file)"),
             (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return link + next((kind for test, kind in kinds if test(mode)), f"a special file (mode {mode:o})")


def _csv_nul_violation(path: Path, table: str) -> Violation | None:
    """A NUL byte anywhere in a CSV: pandas' C parser silently ends the cell there (``7\\x00289`` -> 7).

    A scan of the bytes in chunks; only on a hit is the file parsed, to name the first NUL's line
    and column and the data rows that hold one.
    """
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            if b"\x00" in chunk:
                break
        else:
            return None
    data = path.read_bytes()
    first_line = data.count(b"\n", 0, data.index(b"\x00")) + 1
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""))
    header = next(reader, [])
    # A NUL in the header (every other byte, in UTF-16 text) names no column.
    in_header = any("\x00" in name for name in header)
    where = " (in the header: is the file UTF-16?)" if in_header else ""
    column: str | None = None
    rows: list[int] = []
    examples: list[dict[str, Any]] = []
    try:
        for i, cells in enumerate(reader):
            nul_at = [j for j, cell in enumerate(cells) if "\x00" in cell]
            if nul_at:
                rows.append(i)
                if not in_header and column is None and nul_at[0] < len(header):
                    column = header[nul_at[0]]
                if len(examples) < N_EXAMPLES:
                    examples.append({"_row": i, **dict(zip(header, cells))})
    except csv.Error:
        pass  # a row the csv module cannot split: the first NUL's line is still known
    return Violation(path.name, table, "unreadable_file", column, len(rows),
                     f"the file contains a NUL byte, first on line {first_line}{where}; {len(rows)} data "
                     "row(s) hold one. A NUL is not CSV text: the reader would cut the cell short there",
                     examples)


def _csv_shape_violations(path: Path, table: str) -> list[Violation]:
    """A duplicated header name, or a row whose field count differs from the header's.

    pandas would rename a second ``price`` to ``price.1`` (silently reading the first), shift
    every column when rows carry a trailing delimiter, and pad short rows with empty cells.
    The field counts are checked by pyarrow's strict CSV parser (same quoting rules), reading
    one column only.
    """
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        return []  # empty file: reported by the reader
    duplicated = [name for name, n in Counter(header).items() if n > 1]
    if duplicated:
        return [Violation(path.name, table, "duplicate_column", name, 0,
                          f"column {name!r} appears {Counter(header)[name]} times in the header "
                          "(which one is meant is ambiguous)") for name in duplicated]
    try:
        pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                        convert_options=pa_csv.ConvertOptions(include_columns=[header[0]],
                                                              column_types={header[0]: pa.string()}))
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "Expected" not in message:
            raise
        return [Violation(path.name, table, "malformed_row", None, 0,
                          f"every row must have the header's {len(header)} fields: "
                          f"{message.removeprefix('CSV parse error: ')}"[:500])]
    return []


def _type_string(t: TypedTable, spec: ColumnSpec, arrow_type: pa.DataType | None,
                 out: list[Violation]) -> None:
    s = t.raw[spec.name]
    if arrow_type is not None and not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
                                       or pa.types.is_null(arrow_type) or pa.types.is_dictionary(arrow_type)):
        _flag(out, t, s.notna(), "not_convertible", spec.name,
              f"{spec.name} must be a string, got Parquet {arrow_type}")
        t.typed[spec.name] = pd.Series([None] * len(s), index=s.index, dtype="object")
        return
    t.typed[spec.name] = s.astype("object").where(s.notna(), None)


def _numbers_from(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """float64 values and a mask of non-null cells that are not numbers."""
    if s.dtype == "object":
        as_num = pd.to_numeric(s, errors="coerce")
        # Text "NaN" is refused too: no contract number may be NaN, and it would pass as a null.
        bad = (s.notna() & as_num.isna()).to_numpy()
        good = s.notna().to_numpy() & ~bad
        values = pd.Series(np.nan, index=s.index, dtype="float64")
        if good.any():
            cells = s[good].astype(str).str.strip()
            try:
                # numpy converts text with Python's float(): correctly rounded, so CSV text written
                # with round-trip precision gives the same bits as the Parquet double.
                values[good] = cells.astype("float64")
            except ValueError:  # text pandas reads as a number but float() does not: keep pandas' value
                values[good] = as_num[good]
        return values, bad
    return s.astype("float64"), np.zeros(len(s), dtype=bool)


def _numeric_arrow_type(arrow_type: pa.DataType, kind: str) -> bool:
    types = pa.types
    return (types.is_integer(arrow_type) or types.is_floating(arrow_type) or types.is_decimal(arrow_type)
            or types.is_string(arrow_type) or types.is_large_string(arrow_type) or types.is_null(arrow_type)
            or (types.is_boolean(arrow_type) and kind == "int"))


def _type_number(t: TypedTable, spec: ColumnSpec, arrow_type: pa.DataType | None,
                 out: list[Violation]) -> None:
    s = t.raw[spec.name]
    if arrow_type is not None and not _numeric_arrow_type(arrow_type, spec.kind):
        _flag(out, t, s.notna(), "not_convertible", spec.name,
              f"{spec.name} must be a {spec.kind}, got Parquet {arrow_type}")
        values, bad = pd.Series(np.nan, index=s.index), np.zeros(len(s), dtype=bool)
    elif arrow_type is not None and pa.types.is_integer(arrow_type):
        values, outside = _parquet_integers(s)
        bad = np.zeros(len(s), dtype=bool)
        _flag(out, t, outside, "not_convertible", spec.name, f"{spec.name} is outside the 64-bit integer range")
        if spec.kind == "float":
            _flag(out, t, _inexact_floats(values, values.astype("float64")), "not_convertible", spec.name,
                  f"{spec.name} is an integer that a 64-bit float cannot hold exactly (beyond 2**53); "
                  "it cannot be converted without loss")
    else:
        values, bad = _numbers_from(s)
        # Only a value at or beyond 2**53 can be integer text a float does not hold exactly: the text
        # of those few cells is looked at, not of every cell (0.5 s per million on the hot path).
        big = ~bad & (np.abs(values.to_numpy(dtype="float64", na_value=np.nan)) >= 2.0**53)
        if spec.kind == "float" and s.dtype == object and big.any():
            text = s[big].astype("string").str.strip()
            int_text = text.str.fullmatch(_INT_TEXT_RE).fillna(False).to_numpy(dtype=bool)
            exact = pd.Series(None, index=s.index, dtype="object")
            exact[big] = [int(v) if k else None for v, k in zip(text, int_text)]
            _flag(out, t, _inexact_floats(exact, values), "not_convertible", spec.name,
                  f"{spec.name} is integer text that a 64-bit float cannot hold exactly (beyond 2**53); "
                  "it cannot be converted without loss")
    _flag(out, t, bad, "not_convertible", spec.name, f"{spec.name} must be a {spec.kind}")
    if spec.kind == "int" and values.dtype != "Int64":
        values = _integers_from_numbers(t, spec, s, values, bad, out)
    t.typed[spec.name] = values if spec.kind == "int" else values.astype("float64")


def _inexact_floats(ints: pd.Series, floats: pd.Series) -> np.ndarray:
    """Mask of integer cells whose float64 value is not the same number (only possible beyond 2**53).

    Compared as Python ints, so nothing is rounded on the way; a non-finite float (text too long
    for a double) is left to the range rule.
    """
    as_float = floats.to_numpy(dtype="float64", na_value=np.nan)
    candidates = np.isfinite(as_float) & (np.abs(as_float) >= 2.0**53) & ints.notna().to_numpy()
    lossy = np.zeros(len(ints), dtype=bool)
    for i in np.flatnonzero(candidates):
        lossy[i] = int(as_float[i]) != int(ints.iat[i])
    return lossy


def _parquet_integers(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """A Parquet integer column as Int64, and the mask of values outside int64 (uint64 only).

    Columns with nulls arrive as Python ints (``integer_object_nulls``), not as lossy floats.
    """
    if s.dtype.kind == "i" or (s.dtype.kind == "u" and s.dtype.itemsize < 8):
        return s.astype("Int64"), np.zeros(len(s), dtype=bool)
    if s.dtype.kind == "u":
        outside = s.to_numpy() > INT64_MAX
        return s.where(~outside, 0).astype("int64").astype("Int64").mask(outside), outside
    return _exact_integers(s.to_numpy(dtype=object), s.notna().to_numpy(), s.index)


def _exact_integers(cells: np.ndarray, present: np.ndarray, index: pd.Index) -> tuple[pd.Series, np.ndarray]:
    """Int64 values of integer cells (Python or numpy ints), and the mask of those outside int64.

    Cell by cell with Python ints, so nothing passes through a float: a uint64 above 2**63
    (or text 2**53 + 1) is refused or kept exactly, never rounded or wrapped around.
    """
    as_ints = [int(v) if p else 0 for v, p in zip(cells, present)]
    outside = np.array([not (INT64_MIN <= v <= INT64_MAX) for v in as_ints], dtype=bool)
    kept = present & ~outside
    ints = np.array([v if k else 0 for v, k in zip(as_ints, kept)], dtype="int64")
    return pd.Series(pd.array(ints, dtype="Int64"), index=index).mask(~kept), outside


def _integers_from_numbers(t: TypedTable, spec: ColumnSpec, s: pd.Series, values: pd.Series, bad: np.ndarray,
                           out: list[Violation]) -> pd.Series:
    """Whole numbers of a float (or text) column as Int64; fractional, non-finite or too large refused.

    Integer text longer than 15 digits (where a float may round) is converted exactly with ``int()``.
    """
    floats = values.to_numpy(dtype="float64", na_value=np.nan)
    long_int_text = np.zeros(len(s), dtype=bool)
    if s.dtype == object:
        text = s.astype("object").where(s.notna(), None).astype("string").str.strip()
        long_int_text = (text.str.fullmatch(_INT_TEXT_RE) & (text.str.lstrip("+-").str.len() > 15)
                         ).fillna(False).to_numpy(dtype=bool) & ~bad
    finite = np.isfinite(floats)
    fractional = finite & (np.floor(np.where(finite, floats, 0)) != np.where(finite, floats, 0))
    nonfinite = values.notna().to_numpy() & ~finite
    _flag(out, t, (fractional | nonfinite) & ~bad & ~long_int_text, "not_convertible", spec.name,
          f"{spec.name} must be an integer (a fractional or non-finite value would lose information)")
    whole = finite & ~fractional & ~long_int_text
    too_large = whole & ((floats < INT64_MIN) | (floats >= 2.0**63))
    from_floats = whole & ~too_large
    result = pd.Series(pd.array(np.where(from_floats, floats, 0).astype("int64"), dtype="Int64"),
                       index=s.index).mask(~from_floats)
    if long_int_text.any():
        exact, exact_outside = _exact_integers(np.where(long_int_text, text.to_numpy(dtype=object), 0),
                                               long_int_text, s.index)
        too_large |= exact_outside
        result = result.where(~long_int_text, exact)
    _flag(out, t, too_large, "not_convertible", spec.name, f"{spec.name} is outside the 64-bit integer range")
    return result


def _parse_timestamp_text(
    text: pd.Series,
) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ISO-8601 text (a ``string`` series, NA for null) as UTC microseconds.

    Returns (values, not_convertible, naive, sub_microsecond, unsupported_offset) masks. An
    offset not in an ISO 8601 form (``+02:00:00``) is refused whatever ``assume_utc``: pandas
    reads ``+02:00:00.5`` as a fractional offset. Values with an offset and values without
    one are parsed apart: pandas 2.3, given both in one call, applies an earlier value's
    offset to the naive ones that follow it. Naive values are read as UTC
    (the caller refuses them unless ``assume_utc``). Values outside pandas' nanosecond range
    (after 2262, e.g. a far scheduled resolution_date) are parsed by Python, as a Parquet
    timestamp of that date would be read.
    """
    # RFC 3339 (5.6) allows a lowercase "t" separator and "z" (UTC); pandas and Python parse only "T", "Z".
    text = text.str.replace(r"z$", "Z", regex=True)
    text = text.str.replace(r"^(\d{4}-?\d{2}-?\d{2})t", r"\1T", regex=True)
    present = text.notna().to_numpy()
    iso = present & text.str.match(_ISO_DATE_RE).fillna(False).to_numpy(dtype=bool)
    aware = iso & text.str.contains(_AWARE_RE, regex=True).fillna(False).to_numpy(dtype=bool)
    offset_like = text.str.contains(_OFFSET_LIKE_RE, regex=True).fillna(False).to_numpy(dtype=bool)
    bad_offset = iso & ~aware & offset_like
    naive = iso & ~aware & ~bad_offset
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for group in (aware, naive):
        if group.any():
            parsed[group] = pd.to_datetime(text[group], format="ISO8601", utc=True, errors="coerce")
    sub_us = parsed.notna().to_numpy() & (parsed.dt.nanosecond.fillna(0).to_numpy() != 0)
    values = parsed.astype("datetime64[us, UTC]")
    for i in np.flatnonzero((aware | naive) & parsed.isna().to_numpy()):
        try:
            moment = datetime.fromisoformat(text.iat[i])
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        values.iat[i] = pd.Timestamp(moment.astimezone(timezone.utc))
    bad = present & values.isna().to_numpy() & ~bad_offset
    return values, bad, naive & ~bad, sub_us, bad_offset


def _type_timestamp(t: TypedTable, spec: ColumnSpec, arrow_type: pa.DataType | None, assume_utc: bool,
                    now: pd.Timestamp, out: list[Violation]) -> None:
    s = t.raw[spec.name]
    present = s.notna().to_numpy()
    bad = np.zeros(len(s), dtype=bool)
    naive = np.zeros(len(s), dtype=bool)
    if arrow_type is not None and pa.types.is_timestamp(arrow_type):
        # pyarrow keeps the file's unit (us/ms/s) in pandas 2, so old or far-future values do not overflow.
        if arrow_type.tz is None:
            naive[:] = present
            s = s.dt.tz_localize("UTC")
        else:
            s = s.dt.tz_convert("UTC")
        if arrow_type.unit == "ns":
            bad |= present & (s.dt.nanosecond.fillna(0).to_numpy() != 0)
        values = s.astype("datetime64[us, UTC]")
        _flag(out, t, bad, "not_convertible", spec.name, f"{spec.name} has sub-microsecond precision")
    elif arrow_type is not None and pa.types.is_date(arrow_type):
        naive[:] = present
        values = pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")
    elif arrow_type is None or pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) \
            or pa.types.is_null(arrow_type):
        text = s.astype("object").where(s.notna(), None).astype("string").str.strip()
        values, bad, naive, sub_us, bad_offset = _parse_timestamp_text(text)
        _flag(out, t, bad, "not_convertible", spec.name,
              f"{spec.name} must be an ISO-8601 timestamp with Z or an offset (e.g. 2024-03-01T12:00:00Z)")
        _flag(out, t, bad_offset, "not_convertible", spec.name,
              f"{spec.name} has an unsupported UTC offset form: ISO 8601 offsets are Z, +hh:mm, +hhmm or "
              "+hh (or -), without seconds (e.g. 2024-03-01T14:00:00+02:00)")
        _flag(out, t, sub_us, "not_convertible", spec.name, f"{spec.name} has sub-microsecond precision")
    else:
        _flag(out, t, present, "not_convertible", spec.name,
              f"{spec.name} must be a timestamp with a time zone, got Parquet {arrow_type}")
        values = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")
    if not assume_utc:
        _flag(out, t, naive, "naive_timestamp", spec.name,
              f"{spec.name} has no time zone; give Z or an offset, or ingest with --assume-utc")
    known = values.notna().to_numpy()
    _flag(out, t, known & (values < EARLIEST_TIMESTAMP).fillna(False).to_numpy(), "timestamp_too_early",
          spec.name, f"{spec.name} must be at or after {EARLIEST_TIMESTAMP.date()}")
    if (t.table, spec.name) in SCHEDULED_COLUMNS:
        _flag(out, t, known & (values > LATEST_SCHEDULED).fillna(False).to_numpy(), "timestamp_in_future",
              spec.name, f"{spec.name} is a scheduled date and may be in the future, but not after "
              f"{LATEST_SCHEDULED.isoformat()} (the latest timestamp the platform can store)")
    else:
        limit = now + MAX_FUTURE
        _flag(out, t, known & (values > limit).fillna(False).to_numpy(), "timestamp_in_future", spec.name,
              f"{spec.name} must not be after ingest time + 1 day ({limit.isoformat()})")
    t.typed[spec.name] = values


def read_table(path: Path, table: str, assume_utc: bool,
               now: pd.Timestamp) -> tuple[TypedTable | None, list[Violation]]:
    """Read one table file and type it by the contract. ``None`` when the file cannot be used at all."""
    raw, schema, violations = _read_raw(path, table)
    if raw is None:
        return None, violations
    specs = SCHEMAS[table]
    missing = [c.name for c in specs if c.name not in raw.columns]
    for name in missing:
        violations.append(Violation(
            path.name, table, "missing_column", name, len(raw),
            f"required column {name!r} is missing (columns present: {list(raw.columns)})"))
    if missing:
        return None, violations
    t = TypedTable(table, path.name, raw, pd.DataFrame(index=raw.index))
    for spec in specs:
        arrow_type = schema.field(spec.name).type if schema is not None else None
        if arrow_type is not None and pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if spec.kind == "string":
            _type_string(t, spec, arrow_type, violations)
        elif spec.kind == "timestamp":
            _type_timestamp(t, spec, arrow_type, assume_utc, now, violations)
        else:
            _type_number(t, spec, arrow_type, violations)
        if not spec.nullable:
            _flag(violations, t, t.raw[spec.name].isna().to_numpy(), "null_value", spec.name,
                  f"{spec.name} must not be null")
    if t.table == "markets" and t.typed["outcome"].between(-128, 127).all():
        t.typed["outcome"] = t.typed["outcome"].astype("Int8")  # the store's type; else out_of_range
    return t, violations


def extra_columns_warning(t: TypedTable) -> str | None:
    extra = [c for c in t.raw.columns if c not in {s.name for s in SCHEMAS[t.table]}]
    if extra:
        return f"{t.file}: column(s) {extra} are not in the contract and were ignored"
    return None


__all__ = ["BatchFiles", "discover", "read_table", "extra_columns_warning", "examples_of"]
