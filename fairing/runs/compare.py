"""What changed between two runs: files in the code layer, requirements, params, base image,
image, git commit and metrics. Each section lists only what differs."""
from __future__ import annotations

from typing import Any


def _dict_diff(a: dict, b: dict) -> dict:
    out = {}
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k) or (k in a) != (k in b):
            out[k] = {"a": a.get(k), "b": b.get(k)}
    return out


def _req_name(req: str) -> str:
    import re

    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return (m.group(1).lower().replace("_", "-") if m else req.strip())


def _reqs(doc: dict, which: str) -> dict:
    return {_req_name(r): r for r in ((doc.get("requirements") or {}).get(which) or [])}


class Record(dict):
    """A run record is a plain dict (and prints as one); in a notebook it shows its facts and,
    when the run printed `step=N name=value` lines, each metric over its steps."""

    def _repr_html_(self) -> str:
        from ..display import record_html

        return record_html(self)


class Diff(dict):
    """A diff is a plain dict ({section: changes}); in a notebook it shows as a table."""

    def __repr__(self) -> str:
        return "\n".join(lines(self))

    def _repr_html_(self) -> str:
        from ..display import diff_html

        return diff_html(self)


def diff(a: dict, b: dict) -> Diff:
    """{section: changes} between records `a` and `b`; empty sections are left out."""
    out: Diff = Diff({"a": a["id"], "b": b["id"]})
    fa = (a.get("source") or {}).get("files") or {}
    fb = (b.get("source") or {}).get("files") or {}
    files = {"added": sorted(set(fb) - set(fa)), "removed": sorted(set(fa) - set(fb)),
             "changed": sorted(p for p in set(fa) & set(fb) if fa[p] != fb[p])}
    if any(files.values()):
        out["files"] = {k: v for k, v in files.items() if v}
    for which in ("given", "resolved"):
        ra, rb = _reqs(a, which), _reqs(b, which)
        d = {k: {"a": ra.get(k), "b": rb.get(k)} for k in sorted(set(ra) | set(rb)) if ra.get(k) != rb.get(k)}
        if d:
            out.setdefault("requirements", {})[which] = d
    params = _dict_diff(a.get("params") or {}, b.get("params") or {})
    if params:
        out["params"] = params
    ia, ib = a.get("image") or {}, b.get("image") or {}
    for key, section in (("base", "base_image"), ("base_digest", "base_image_digest"), ("digest", "image")):
        if ia.get(key) != ib.get(key):
            out[section] = {"a": ia.get(key), "b": ib.get(key)}
    sa, sb = (a.get("source") or {}).get("digest"), (b.get("source") or {}).get("digest")
    if sa != sb:
        out["source"] = {"a": sa, "b": sb}
    ga, gb = (a.get("git") or {}).get("commit"), (b.get("git") or {}).get("commit")
    if ga != gb:
        out["git_commit"] = {"a": ga, "b": gb}
    metrics = _dict_diff(a.get("metrics") or {}, b.get("metrics") or {})
    if metrics:
        out["metrics"] = metrics
    return out


def lines(d: dict) -> list[str]:
    """The diff as text lines (what `fair runs diff` prints)."""
    out = [f"runs {d['a']} -> {d['b']}"]
    if len(d) == 2:
        out.append("  no differences")
        return out
    files = d.get("files") or {}
    for kind, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for p in files.get(kind, []):
            out.append(f"  file {sign} {p}" + ("" if kind == "changed" else f" ({kind})"))
    for which, reqs in (d.get("requirements") or {}).items():
        for name, ab in reqs.items():
            out.append(f"  requirement ({which}) {name}: {ab['a'] or '-'} -> {ab['b'] or '-'}")
    for section in ("params", "metrics"):
        for k, ab in (d.get(section) or {}).items():
            out.append(f"  {section[:-1]} {k}: {_fmt(ab['a'])} -> {_fmt(ab['b'])}")
    for section in ("base_image", "base_image_digest", "image", "source", "git_commit"):
        if section in d:
            out.append(f"  {section.replace('_', ' ')}: {d[section]['a'] or '-'} -> {d[section]['b'] or '-'}")
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)
