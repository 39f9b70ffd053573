"""What changed between two model versions: the code that trained them (source digest, files,
requirements, git, image), their params and metrics (the runs' diff, fairing.runs.compare), and
the model files themselves."""
from __future__ import annotations

from ..runs import compare


def _as_record(v: dict) -> dict:
    """A version's run, shaped as a run record for fairing.runs.compare."""
    run = v.get("run") or {}
    return {"id": v["ref"], "source": {"digest": run.get("source_digest"), "files": run.get("source_files") or {}},
            "requirements": run.get("requirements") or {}, "params": run.get("params") or {},
            "metrics": run.get("metrics") or {}, "git": run.get("git") or {},
            "image": {"digest": run.get("image_digest") or run.get("image"), "base": run.get("base_image")}}


def diff(a: dict, b: dict) -> compare.Diff:
    out = compare.diff(_as_record(a), _as_record(b))
    ra, rb = (a.get("run") or {}).get("id"), (b.get("run") or {}).get("id")
    if ra != rb:
        out["run"] = {"a": ra, "b": rb}
    fa = {f["path"]: f["digest"] for f in a.get("files") or []}
    fb = {f["path"]: f["digest"] for f in b.get("files") or []}
    model = {"added": sorted(set(fb) - set(fa)), "removed": sorted(set(fa) - set(fb)),
             "changed": sorted(p for p in set(fa) & set(fb) if fa[p] != fb[p])}
    if any(model.values()):
        out["model_files"] = {k: v for k, v in model.items() if v}
    return out


def lines(d: dict) -> list[str]:
    out = compare.lines(d)
    out[0] = f"models {d['a']} -> {d['b']}"
    extra = []
    if "run" in d:
        extra.append(f"  run: {d['run']['a']} -> {d['run']['b']}")
    mf = d.get("model_files") or {}
    for kind, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for p in mf.get(kind, []):
            extra.append(f"  model file {sign} {p}" + ("" if kind == "changed" else f" ({kind})"))
    if extra and out[1:] == ["  no differences"]:
        out = out[:1]
    return out + extra
