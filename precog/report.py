"""``precog report``: every dashboard panel run on Elasticsearch, drawn as PNG, in one HTML page.

The panels come from :mod:`precog.dashboards`, the same definitions the Kibana saved
objects are generated from, so the report previews exactly what Kibana shows. Panels
without data get a "no data" image and a note instead of failing the report.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from precog.dashboards import (  # noqa: E402
    Dashboard,
    DateHistogram,
    Histogram,
    Panel,
    TimeRange,
    auto_interval,
    bucket_name,
    es_request,
    extent_request,
    field_type,
    rows,
)

Echo = Callable[[str], None]
MAX_TABLE_ROWS = 15
MAX_TABLE_COLUMNS = 12


@dataclass
class PanelResult:
    """One panel computed: its rows (empty = no data), the request sent, and its image."""

    panel: Panel
    index: str
    request: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    image: Path | None = None

    @property
    def has_data(self) -> bool:
        """Whether the panel found anything to draw."""
        return bool(self.rows) and not self.error


@dataclass
class Report:
    """What ``precog report`` wrote."""

    html: Path
    namespace: str
    results: list[PanelResult]

    @property
    def with_data(self) -> int:
        """How many panels had data."""
        return sum(r.has_data for r in self.results)

    def summary(self) -> str:
        """The command's one-line summary."""
        empty = [r.panel.id for r in self.results if not r.has_data]
        tail = f" (no data: {', '.join(empty)})" if empty else ""
        return f"{self.with_data}/{len(self.results)} panels had data{tail}"


# ---------------------------------------------------------------------------- formatting
def fmt_time(ms: float | None) -> str:
    """Epoch milliseconds as a UTC timestamp.

    >>> fmt_time(1700000000000)
    '2023-11-14 22:13:20'
    >>> fmt_time(None)
    ''
    """
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_value(v: Any) -> str:
    """A table cell: numbers compact, long strings shortened.

    >>> fmt_value(0.123456), fmt_value(12345.0), fmt_value(None), fmt_value("a" * 30)
    ('0.1235', '12,345', '', 'aaaaaaaaaaaaaaaaaaaaaaa…')
    """
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:,.0f}" if abs(v) >= 1000 or v.is_integer() else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    text = str(v)
    return text if len(text) <= 24 else text[:23] + "…"


def date_columns(panel: Panel, template: Mapping[str, Any]) -> set[str]:
    """Row columns holding epoch-ms dates (date buckets, min/max of dates, date fields)."""
    cols = {bucket_name(b) for b in panel.nesting() if isinstance(b, DateHistogram)}
    cols |= {m.name for m in panel.metrics
             if m.field and field_type(template, m.field) == "date"}
    cols |= {c for c in panel.columns if field_type(template, c) == "date"}
    return cols


def series(panel: Panel, data: Sequence[Mapping[str, Any]]
           ) -> dict[str, list[tuple[Any, float]]]:
    """Chart series: one per (split value, metric), each a list of (x, y) in row order.

    >>> from precog.dashboards import Metric, Terms
    >>> p = Panel("p", "P", "alerts", "bar", x=Terms("kind"), split=Terms("model_id"),
    ...           metrics=(Metric("count"),))
    >>> series(p, [{"kind": "a", "model_id": "m1", "count": 2.0},
    ...            {"kind": "b", "model_id": "m1", "count": 1.0},
    ...            {"kind": "a", "model_id": "m2", "count": 5.0}])
    {'m1': [('a', 2.0), ('b', 1.0)], 'm2': [('a', 5.0)]}
    """
    out: dict[str, list[tuple[Any, float]]] = {}
    x_name = bucket_name(panel.x) if panel.x is not None else None
    for row in data:
        for m in panel.metrics:
            parts = []
            if panel.split is not None:
                parts.append(str(row[bucket_name(panel.split)]))
            if len(panel.metrics) > 1 or not parts:
                parts.append(m.name)
            y = row.get(m.name)
            out.setdefault(" · ".join(parts), []).append(
                (row[x_name] if x_name else "", math.nan if y is None else y))
    return out


# ---------------------------------------------------------------------------- drawing
def _to_datetime(ms: float) -> float:
    """Epoch ms as a matplotlib date number."""
    return float(mdates.date2num(datetime.fromtimestamp(ms / 1000, tz=UTC)))


def _draw_xy(ax: Axes, panel: Panel, data: Sequence[Mapping[str, Any]]) -> None:
    lines = series(panel, data)
    is_time = isinstance(panel.x, DateHistogram)
    if panel.kind == "line":
        for label, pts in lines.items():
            xs = [_to_datetime(x) if is_time else x for x, _ in pts]
            ax.plot(xs, [y for _, y in pts], marker=".", label=label)
    elif panel.kind == "histogram" and isinstance(panel.x, Histogram):
        for label, pts in lines.items():
            ax.bar([x for x, _ in pts], [y for _, y in pts], width=panel.x.interval,
                   align="edge", alpha=0.5, label=label)
    elif panel.kind == "bar_stacked" and is_time:
        keys = sorted({x for pts in lines.values() for x, _ in pts})
        steps = [b - a for a, b in zip(keys, keys[1:], strict=False)]
        width = (min(steps) if steps else 3_600_000) / 86_400_000 * 0.8
        bottom = dict.fromkeys(keys, 0.0)
        for label, pts in lines.items():
            ys = dict(pts)
            vals = [0.0 if math.isnan(ys.get(k, 0.0)) else ys.get(k, 0.0) for k in keys]
            ax.bar([_to_datetime(k) for k in keys], vals, width=width,
                   bottom=[bottom[k] for k in keys], label=label)
            for k, v in zip(keys, vals, strict=True):
                bottom[k] += v
    else:  # grouped bars over categories
        cats = list(dict.fromkeys(str(x) for pts in lines.values() for x, _ in pts))
        n = max(len(lines), 1)
        for i, (label, pts) in enumerate(lines.items()):
            ys = {str(x): y for x, y in pts}
            ax.bar([c + (i - (n - 1) / 2) * 0.8 / n for c in range(len(cats))],
                   [ys.get(c, 0.0) for c in cats], width=0.8 / n, label=label)
        ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    if is_time:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if len(lines) > 1 or panel.split is not None:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _draw_table(ax: Axes, panel: Panel, data: Sequence[Mapping[str, Any]],
                dates: set[str]) -> None:
    cols = [c for c in data[0] if c != "_doc_count"] if panel.kind != "search" else \
        list(panel.columns)
    cols = cols[:MAX_TABLE_COLUMNS]
    cells = [[fmt_time(r.get(c)) if c in dates else fmt_value(r.get(c)) for c in cols]
             for r in data[:MAX_TABLE_ROWS]]
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=cols, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.auto_set_column_width(list(range(len(cols))))


def _draw(fig: Figure, panel: Panel, data: Sequence[Mapping[str, Any]],
          dates: set[str]) -> None:
    ax = fig.add_subplot()
    if panel.kind == "metric":
        ax.axis("off")
        value = data[0].get(panel.metrics[0].name)
        ax.text(0.5, 0.5, fmt_value(value), ha="center", va="center", fontsize=36)
        ax.text(0.5, 0.2, panel.metrics[0].name, ha="center", va="center", fontsize=11)
    elif panel.kind == "pie":
        pts = next(iter(series(panel, data).values()))
        ax.pie([y for _, y in pts], labels=[str(x) for x, _ in pts], autopct="%1.1f%%",
               wedgeprops={"width": 0.45})
    elif panel.kind in ("table", "search"):
        _draw_table(ax, panel, data, dates)
    else:
        _draw_xy(ax, panel, data)


def render_panel(panel: Panel, data: Sequence[Mapping[str, Any]], path: Path,
                 dates: set[str] = frozenset(), note: str = "") -> Path:  # type: ignore[assignment]
    """Draw one panel to ``path`` (PNG): its chart, or a clear "no data" image."""
    wide = panel.width > 24 or panel.kind in ("table", "search")
    height = 4.2 if wide else 3.6
    if data and panel.kind in ("table", "search"):
        height = 1.0 + 0.3 * (min(len(data), MAX_TABLE_ROWS) + 1)
    fig = plt.figure(figsize=(12 if wide else 7, height), dpi=90)
    try:
        fig.suptitle(panel.title, fontsize=11)
        if data:
            _draw(fig, panel, data, dates)
        else:
            ax = fig.add_subplot()
            ax.axis("off")
            ax.text(0.5, 0.55, "no data", ha="center", va="center", fontsize=22,
                    color="0.45")
            ax.text(0.5, 0.3, note or "nothing matched in this namespace and time range",
                    ha="center", va="center", fontsize=9, color="0.45", wrap=True)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------- HTML
def _time_text(time_range: TimeRange) -> str:
    start, end = time_range
    if start is None and end is None:
        return "all time"
    return f"{fmt_time(start) or 'beginning'} to {fmt_time(end) or 'now'} UTC"


def render_html(namespace: str, time_range: TimeRange, boards: Sequence[Dashboard],
                results: Mapping[str, PanelResult], generated: datetime) -> str:
    """The report page: title, namespace, time range, one section per dashboard."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>precog report: {esc(namespace)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        ".panel{display:inline-block;vertical-align:top;margin:.5em;max-width:100%}"
        ".panel img{max-width:100%;border:1px solid #ddd}.note{color:#a60}"
        "details pre{font-size:11px;background:#f6f6f6;padding:.5em;max-width:900px;"
        "overflow:auto}</style></head><body>",
        f"<h1>precog report: namespace <code>{esc(namespace)}</code></h1>",
        f"<p>Time range: {esc(_time_text(time_range))}. Generated "
        f"{esc(generated.strftime('%Y-%m-%d %H:%M:%S'))} UTC. "
        f"{sum(r.has_data for r in results.values())}/{len(results)} panels had data.</p>",
    ]
    for board in boards:
        parts.append(f"<h2>{esc(board.title)}</h2><p>{esc(board.description)}</p>")
        for panel in board.panels:
            r = results[panel.id]
            parts.append(f"<div class='panel'><h3>{esc(panel.title)}</h3>")
            if r.image is not None:
                parts.append(f"<img src='{esc(r.image.name)}' alt='{esc(panel.title)}'>")
            if r.error:
                parts.append(f"<p class='note'>Query failed: {esc(r.error)}</p>")
            elif not r.rows:
                parts.append(f"<p class='note'>No data in <code>{esc(r.index)}</code> for "
                             "this time range.</p>")
            if panel.description:
                parts.append(f"<p>{esc(panel.description)}</p>")
            parts.append(f"<details><summary>query on {esc(r.index)}</summary><pre>"
                         f"{esc(json.dumps(r.request, indent=1))}</pre></details></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- I/O edge
def run_panel(es: Any, panel: Panel, index: str, time_range: TimeRange) -> PanelResult:
    """Run one panel's request on Elasticsearch; a missing index is "no data", a
    rejected query is recorded on the result rather than raised."""
    from elasticsearch import ApiError

    def search(body: dict[str, Any]) -> Any:
        return es.search(index=index, ignore_unavailable=True, allow_no_indices=True,
                         **body).body

    result = PanelResult(panel, index, es_request(panel, time_range))
    try:
        if any(isinstance(b, DateHistogram) for b in panel.nesting()):
            found = search(extent_request(panel, time_range)).get("aggregations", {})
            start, end = time_range
            first = start if start is not None else found.get("first", {}).get("value")
            last = end if end is not None else found.get("last", {}).get("value")
            interval = auto_interval(None if first is None else int(first),
                                     None if last is None else int(last))
            result.request = es_request(panel, time_range, interval=interval)
        result.rows = rows(panel, search(result.request))
    except ApiError as exc:
        result.error = f"{exc.meta.status} {_reason(exc)}"
    return result


def _reason(exc: Any) -> str:
    """The root cause Elasticsearch gave for a rejected request."""
    try:
        return str(exc.body["error"]["root_cause"][0]["reason"])
    except (KeyError, IndexError, TypeError):
        return str(exc.message)


def write_report(es: Any, namespace: str, boards: Sequence[Dashboard],
                 templates: Mapping[str, Any], out_dir: Path,
                 time_range: TimeRange = (None, None), echo: Echo | None = None) -> Report:
    """Compute and draw every panel of ``boards`` for ``namespace`` into ``out_dir``.
    Elasticsearch being unreachable raises the client's TransportError (the CLI names it)."""
    say = echo or (lambda _msg: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, PanelResult] = {}
    for board in boards:
        for panel in board.panels:
            index = f"{namespace}-{panel.index}"
            r = run_panel(es, panel, index, time_range)
            dates = date_columns(panel, templates[panel.index])
            r.image = render_panel(panel, r.rows, out_dir / f"{panel.id}.png", dates,
                                   note=r.error)
            results[panel.id] = r
            say(f"{panel.id}: {len(r.rows)} row(s)" + (f", error {r.error}" if r.error else ""))
    page = out_dir / "report.html"
    page.write_text(render_html(namespace, time_range, boards, results, datetime.now(UTC)))
    return Report(page, namespace, list(results.values()))
