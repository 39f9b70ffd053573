"""Results you can look at in a notebook: the HTML (and plain-text) reprs of a run's handle and
RunResult, a TuneResult, a runs diff and a serving endpoint. Every value is escaped here
(html.escape); callers pass plain values, never markup. Standard library only: what needs
matplotlib or the network (a plot, an endpoint's /metrics) is computed by the caller and passed in.
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

_STATUS_COLOR = {"Succeeded": "#1a7f37", "Ready": "#1a7f37", "Running": "#0969da", "Deployed": "#0969da",
                 "Pending": "#9a6700", "Failed": "#cf222e", "Interrupted": "#9a6700", "Deleted": "#57606a"}
_BOX = ("font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif;font-size:13px;"
        "border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:4px 0;max-width:60em")
_TABLE = "border-collapse:collapse;margin:4px 0"
_CELL = "padding:2px 10px 2px 0;text-align:left;vertical-align:top;border-bottom:1px solid #eaeef2"
_CODE = "font-family:SFMono-Regular,Consolas,'Liberation Mono',Menlo,monospace;font-size:12px"


def esc(value: Any) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def status_badge(status: Any) -> str:
    color = _STATUS_COLOR.get(str(status), "#57606a")
    return (f'<span style="color:#fff;background:{color};border-radius:10px;padding:1px 8px;font-size:12px">'
            f"{esc(status)}</span>")


def code(text: Any) -> str:
    return f'<code style="{_CODE}">{esc(text)}</code>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped except the columns in `raw` (already HTML made here)."""
    head = "".join(f'<th style="{_CELL};font-weight:600">{esc(h)}</th>' for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td style="{_CELL}">{c if i in raw else esc(c)}</td>' for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def box(title: str, inner: str, *, status: Any = None) -> str:
    badge = f" {status_badge(status)}" if status is not None else ""
    return f'<div style="{_BOX}"><div style="font-weight:600;margin-bottom:4px">{esc(title)}{badge}</div>{inner}</div>'


def fields(pairs: Iterable[tuple[str, Any]], *, raw: Sequence[str] = ()) -> str:
    """Label/value rows; values escaped unless their label is in `raw`."""
    rows = "".join(f'<tr><th style="{_CELL};font-weight:600;color:#57606a">{esc(k)}</th>'
                   f'<td style="{_CELL}">{v if k in raw else esc(v)}</td></tr>'
                   for k, v in pairs if v is not None and v != "")
    return f'<table style="{_TABLE}">{rows}</table>'


def text_fields(title: str, pairs: Iterable[tuple[str, Any]]) -> str:
    pairs = [(k, v) for k, v in pairs if v is not None and v != ""]
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join([title, *(f"  {k.ljust(width)}  {v}" for k, v in pairs)])


# --- a run: its handle, or the RunResult execute returned ------------------------------------------

def follow_commands(name: str | None, namespace: str | None = None, *, local: bool = False) -> list[str]:
    """What a person types to look after the workload `name`."""
    if not name:
        return []
    ns = f" -n {namespace}" if namespace else ""
    out = [f"fair logs {name} -f{ns}", f"fair status {name}{ns}", f"fair delete {name}{ns}"]
    if not local:
        out.append(f"fairing.attach({name!r}" + (f", namespace={namespace!r})" if namespace else ")"))
    return out


def run_facts(*, handle: Any = None, record: Mapping | None = None, status: Any = None, mode: str | None = None,
              image: Any = None, value: Any = None, has_value: bool = False) -> tuple[str, list[tuple[str, Any]], list[str]]:
    """(title, label/value pairs, commands) shared by the text and HTML reprs."""
    record = record or {}
    name = getattr(handle, "name", None) or (record.get("workload") or {}).get("name")
    ns = getattr(handle, "namespace", None)
    what = getattr(handle, "what", None) or "run"
    img = record.get("image") or {}
    ref = getattr(image, "ref", None) or img.get("ref")
    digest = getattr(image, "digest", None) or img.get("digest")
    if ref and digest and digest in ref:
        digest = None  # already pinned in the reference
    pairs = [("status", status or record.get("status")), ("name", f"{ns}/{name}" if name and ns else name),
             ("mode", mode), ("run id", record.get("id")), ("image", ref), ("digest", digest)]
    if record.get("reason"):
        pairs.append(("reason", record["reason"]))
    if record.get("metrics"):
        pairs.append(("metrics", ", ".join(f"{k}={v}" for k, v in record["metrics"].items())))
    if has_value:
        r = repr(value)
        pairs.append(("value", r if len(r) <= 200 else r[:197] + "..."))
    if record.get("id"):
        pairs.append(("record", f"fair runs show {record['id']}"))
    local = bool(mode and str(mode).startswith("local")) or ns is None
    return f"{what} {name}" if name else "run", pairs, follow_commands(name, ns, local=local)


def run_text(title: str, pairs: list, commands: list[str]) -> str:
    out = text_fields(title, pairs)
    if commands:
        out += "\n  follow: " + " | ".join(commands)
    return out


def run_html(title: str, pairs: list, commands: list[str], record: Mapping | None = None) -> str:
    """A run's facts, how to follow it, and its metrics over steps (a line per metric, with a
    sparkline) when it printed `step=N name=value` lines."""
    status = dict(pairs).get("status")
    shown = [(k, v) for k, v in pairs if k != "status"]
    cmd = "".join(f"<div>{code(c)}</div>" for c in commands)
    extra = f'<div style="margin-top:4px;color:#57606a">follow it:</div>{cmd}' if cmd else ""
    steps = metric_steps_html((record or {}).get("metric_steps") or {})
    if steps:
        extra += f'<div style="margin-top:4px;color:#57606a">metrics over steps:</div>{steps}'
    return box(title, fields(shown) + extra, status=status)


def record_facts(record: Mapping) -> tuple[str, list, list[str]]:
    """A run record read back (fairing.runs.get): what it ran, how it ended, what it measured."""
    w = record.get("workload") or {}
    img = record.get("image") or {}
    metrics = record.get("metrics") or {}
    pairs = [("status", record.get("status")), ("run id", record.get("id")), ("command", record.get("command")),
             ("entry", record.get("entry")), ("workload", w.get("name")),
             ("image", img.get("digest") or img.get("ref")),
             ("params", ", ".join(f"{k}={v}" for k, v in (record.get("params") or {}).items()) or None),
             ("metrics", ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()) or None),
             ("error", record.get("error"))]
    return f"run {record.get('id')}", [(k, v) for k, v in pairs if v not in (None, "")], \
        [f"fair runs show {record.get('id')}"]


def record_html(record: Mapping) -> str:
    return run_html(*record_facts(record), record=record)


def live_status(handle: Any) -> str | None:
    """The workload's status now, or None when it cannot be asked (a repr must never fail)."""
    try:
        return handle.status()
    except Exception:  # noqa: BLE001 - unreachable cluster, gone engine: the record's status is shown
        return None


def handle_text(h: Any) -> str:
    record = getattr(getattr(h, "run", None), "doc", None)
    title, pairs, cmds = run_facts(handle=h, record=record, status=live_status(h))
    return run_text(title, pairs, cmds)


def handle_html(h: Any) -> str:
    record = getattr(getattr(h, "run", None), "doc", None)
    title, pairs, cmds = run_facts(handle=h, record=record, status=live_status(h))
    return run_html(title, pairs, cmds, record=record)


def result_facts(res: Any):
    record = getattr(getattr(res, "run", None), "doc", None)
    status = res.status or (record or {}).get("status")
    return run_facts(handle=res.handle, record=record, status=status, mode=res.mode, image=res.image,
                     value=res.value, has_value=res.value is not None)


# --- tuning --------------------------------------------------------------------------------------

def tune_html(title: str, status: Any, header: Sequence[str], rows: Sequence[Sequence[Any]], *,
              best_row: int | None = None, best: str | None = None, png: bytes | None = None,
              note: str | None = None) -> str:
    """A tuning run: one row per trial (the best marked), the best line, and the plot (PNG)."""
    import base64

    if best_row is not None:
        rows = [list(r) for r in rows]
        rows[best_row][0] = f"{rows[best_row][0]} ★"
    parts = [f"<div>{esc(best)}</div>" if best else "", table(header, rows)]
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="objective per trial and per parameter" style="max-width:100%" '
                     f'src="data:image/png;base64,{data}">')
    elif note:
        parts.append(f'<div style="color:#57606a">{esc(note)}</div>')
    return box(title, "".join(parts), status=status)


# --- runs diff -----------------------------------------------------------------------------------

def diff_rows(d: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(section, what, a, b) for each difference in a fairing.runs.diff result."""
    rows = []
    files = d.get("files") or {}
    for kind, (a, b) in (("added", ("-", "present")), ("removed", ("present", "-")), ("changed", ("old", "new"))):
        for p in files.get(kind, []):
            rows.append(("file", f"{p} ({kind})", a, b))
    for which, reqs in (d.get("requirements") or {}).items():
        for name, ab in reqs.items():
            rows.append((f"requirement ({which})", name, ab["a"] or "-", ab["b"] or "-"))
    for section in ("params", "metrics"):
        for k, ab in (d.get(section) or {}).items():
            rows.append((section[:-1], k, _fmt(ab["a"]), _fmt(ab["b"])))
    for section in ("base_image", "base_image_digest", "image", "source", "git_commit"):
        if section in d:
            rows.append((section.replace("_", " "), "", _fmt(d[section]["a"]), _fmt(d[section]["b"])))
    return rows


def diff_html(d: Mapping[str, Any]) -> str:
    rows = diff_rows(d)
    inner = table(("section", "what", f"run {d.get('a')}", f"run {d.get('b')}"), rows) if rows \
        else "<div>no differences</div>"
    return box(f"runs {d.get('a')} → {d.get('b')}", inner)


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


# --- metrics over steps --------------------------------------------------------------------------

def sparkline_svg(points: Sequence[Sequence[float]], *, width: int = 160, height: int = 32) -> str:
    """A small inline SVG line of (step, value) points (no matplotlib needed)."""
    pts = [(float(p[0]), float(p[1])) for p in points if len(p) >= 2]
    if len(pts) < 2:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 4) / ((x1 - x0) or 1)
    sy = (height - 4) / ((y1 - y0) or 1)
    path = " ".join(f"{2 + (x - x0) * sx:.1f},{height - 2 - (y - y0) * sy:.1f}" for x, y in pts)
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<polyline fill="none" stroke="#0969da" stroke-width="1.5" points="{path}"/></svg>')


def metric_steps_html(steps: Mapping[str, Sequence[Sequence[float]]]) -> str:
    rows = []
    for name, pts in steps.items():
        if not pts:
            continue
        rows.append((esc(name), str(len(pts)), esc(_fmt(pts[0][1])), esc(_fmt(pts[-1][1])), sparkline_svg(pts)))
    if not rows:
        return ""
    return table(("metric", "steps", "first", "last", ""), rows, raw=(0, 1, 2, 3, 4))


# --- an endpoint ---------------------------------------------------------------------------------

def endpoint_facts(ep: Any, traffic: Mapping[str, Any] | None, status: Any) -> tuple[str, list]:
    handle = getattr(ep, "handle", None)
    url = getattr(handle, "url", None) if handle is not None else None
    record = getattr(getattr(ep, "run", None), "doc", None) or {}
    pairs = [("status", status if handle is not None else "not created"), ("url", url),
             ("model", (traffic or {}).get("model") or getattr(ep, "name", None)),
             ("image", getattr(getattr(ep, "image", None), "ref", None)),
             ("run id", record.get("id"))]
    if traffic:
        def ms(v):
            return "-" if v is None else f"{v * 1000:.1f} ms"

        pairs += [("requests", f"{traffic['requests']} ({traffic['errors']} errors)"),
                  ("latency", f"p50 {ms(traffic.get('p50_seconds'))}, p95 {ms(traffic.get('p95_seconds'))}")]
    return f"endpoint {getattr(ep, 'name', '')}", pairs


def endpoint_html(ep: Any, traffic: Mapping[str, Any] | None, status: Any) -> str:
    title, pairs = endpoint_facts(ep, traffic, status)
    st = dict(pairs).get("status")
    url = dict(pairs).get("url")
    shown = [(k, (f'<a href="{esc(v)}">{esc(v)}</a>' if k == "url" and url else v)) for k, v in pairs if k != "status"]
    return box(title, fields(shown, raw=("url",)), status=st)
