"""The tuning plot, on matplotlib (an optional extra, imported only here).

Panel 1: the objective of each finished trial against its number, with the best-so-far as a step
line. Then one panel per parameter: the objective against that parameter's value (log axis for
log-scale parameters, category positions for choices)."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def figure(result: Any):
    try:
        # A bare Figure, not pyplot: no global figure state, no backend switch, no second copy
        # shown by a notebook's inline backend; savefig renders with Agg, and Jupyter displays the
        # returned Figure itself.
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plotting needs matplotlib", hint="pip install matplotlib (or 'fairing[tune]')") from None
    from .space import Choice

    done = sorted(result.finished_trials, key=lambda t: t.number)
    names = list(result.space)
    n = 1 + len(names)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.5 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    ax = flat[0]
    ax.scatter([t.number for t in done], [t.value for t in done], color="tab:blue", label="trial", zorder=3)
    steps = result.best_so_far()
    if steps:
        ax.step([s[0] for s in steps], [s[1] for s in steps], where="post", color="tab:orange",
                label="best so far")
    best = result.best
    ax.set_title(f"{result.objective} per trial ({result.goal})")
    ax.set_xlabel("trial")
    ax.set_ylabel(result.objective)
    ax.legend(loc="best", fontsize="small")
    for ax, name in zip(flat[1:], names):
        p = result.space[name]
        xs = [t.params.get(name) for t in done]
        ys = [t.value for t in done]
        if isinstance(p, Choice):
            labels = [str(v) for v in p.values]
            pos = {str(v): i for i, v in enumerate(p.values)}
            ax.scatter([pos[str(x)] for x in xs], ys, color="tab:blue", zorder=3)
            ax.set_xticks(range(len(labels)), labels)
        else:
            ax.scatter(xs, ys, color="tab:blue", zorder=3)
            if getattr(p, "log", False):
                ax.set_xscale("log")
        if best is not None:
            bx = best.params.get(name)
            if isinstance(p, Choice):
                bx = p.values.index(bx) if bx in p.values else None
            if bx is not None:
                ax.scatter([bx], [best.value], color="tab:red", marker="*", s=160, zorder=4, label="best")
                ax.legend(loc="best", fontsize="small")
        ax.set_title(f"{result.objective} vs {name}")
        ax.set_xlabel(name)
        ax.set_ylabel(result.objective)
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    # A notebook shows what a cell returns; a bare Figure (no pyplot) has no PNG repr of its own.
    fig._repr_png_ = lambda: _png(fig)
    return fig


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()

