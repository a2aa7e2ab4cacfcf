"""Evaluation reports: a Markdown table (one row per configuration), a grouped bar chart of
it as PNG, the resolved settings as JSON beside them, and JSON Lines for per-query rows."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_PNG = "report.png"
SETTINGS_JSON = "settings.json"


def write_report(
    out_dir: Path,
    title: str,
    table_rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    extra_sections: Mapping[str, str] | None = None,
    chart_columns: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write `report.md`, `report.png` and `settings.json` into `out_dir`.

    Each row is one configuration: a `name` plus metric columns (the union of the rows' keys,
    in first-seen order; floats shown with 3 decimals). The chart groups bars by metric, one
    bar per configuration, over `chart_columns` or by default every numeric column whose
    values all lie in [0, 1] (scores, not latencies). Returns (markdown path, PNG path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = _columns(table_rows)
    if chart_columns is None:
        chart_columns = [c for c in columns if c != "name" and _is_unit_column(table_rows, c)]
    md_path, png_path = out_dir / REPORT_MD, out_dir / REPORT_PNG

    (out_dir / SETTINGS_JSON).write_text(
        json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False, default=_jsonable) + "\n",
        encoding="utf-8",
    )
    _bar_chart(png_path, title, table_rows, list(chart_columns))

    parts = [f"# {title}", "", markdown_table(table_rows, columns), "", f"![{title}]({REPORT_PNG})", ""]
    for heading, body in (extra_sections or {}).items():
        parts += [f"## {heading}", "", body.rstrip(), ""]
    parts += ["## Settings", "", f"The resolved settings are saved in `{SETTINGS_JSON}`.", ""]
    md_path.write_text("\n".join(parts), encoding="utf-8")
    log.info("wrote report %s", md_path)
    return md_path, png_path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table; floats to 3 decimals, missing cells as "-"."""
    columns = list(columns) if columns is not None else _columns(rows)
    if not columns:
        return "_no results_"
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(":---" if c == "name" else "---:" for c in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """Write one JSON object per line (UTF-8, non-ASCII kept); dataclasses and paths are
    converted. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(_jsonable(row) if dataclasses.is_dataclass(row) else row,
                                ensure_ascii=False, default=_jsonable) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: dict[str, None] = {"name": None} if any("name" in r for r in rows) else {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_unit_column(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(values) and all(_is_number(v) and 0.0 <= v <= 1.0 for v in values)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _bar_chart(path: Path, title: str, rows: Sequence[Mapping[str, Any]], columns: list[str]) -> None:
    # object-oriented API with the Agg canvas: no pyplot, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.2 * len(columns) + 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    if not columns or not rows:
        ax.text(0.5, 0.5, "no score columns to chart", ha="center", va="center")
        ax.set_axis_off()
    else:
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            offsets = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
            values = [float(row[c]) if _is_number(row.get(c)) else 0.0 for c in columns]
            ax.bar(offsets, values, width=width, label=str(row.get("name", f"row {i + 1}")))
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, format="png")
