"""Tuning a *function*: the wrapper that runs inside each trial.

The image is built once, so a trial's parameters cannot be pickled into it; they arrive as
FAIRING_PARAM_<NAME> environment variables (the same ones scripts get) and are typed back with a
plain spec made from the search space. The function's return value is its metrics: numeric
entries are printed as `name=value` lines (Katib's StdOut format), which every backend reads.

This module is pickled *by value* into the image (fairing itself is not installed there), so it
imports nothing from fairing and only the standard library at call time."""


def make_trial_function(fn, spec, objective="objective"):
    """`spec`: {name: {"env": "FAIRING_PARAM_X", "type": "float"|"int"|"choice"|"bool",
    "choices": [[text, value], ...]}} -> a no-argument function for the function preprocessor.
    A function returning a bare number returns the `objective` metric."""

    def fairing_trial():
        return run_trial(fn, spec, objective)

    fairing_trial.__name__ = fairing_trial.__qualname__ = getattr(fn, "__name__", "trial")
    return fairing_trial


def _convert(name, entry, text):
    kind = entry["type"]
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(float(text)) if float(text).is_integer() else int(text)
    for choice_text, value in entry.get("choices", ()):
        if choice_text == text:
            return value
    raise ValueError("%r is not one of the choices for %s" % (text, name))


def run_trial(fn, spec, objective="objective"):
    import math
    import os
    import sys

    params = {}
    for name, entry in spec.items():
        text = os.environ.get(entry["env"])
        if text is None:
            sys.stderr.write("fairing: parameter %s is missing: %s is not set\n" % (name, entry["env"]))
            raise SystemExit(2)
        try:
            params[name] = _convert(name, entry, text)
        except ValueError as e:
            sys.stderr.write("fairing: parameter %s=%r: %s\n" % (name, text, e))
            raise SystemExit(2)
    result = fn(**params)
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        result = {objective: result}  # a bare number is the objective itself
    if not isinstance(result, dict):
        sys.stderr.write("fairing: the function returned %s, not a dict of metrics; return e.g. "
                         "{'accuracy': 0.93}\n" % type(result).__name__)
        raise SystemExit(2)
    for key, value in result.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue  # not a metric (a model, a path...): still in the returned value
        if isinstance(value, bool) or isinstance(value, str) or not math.isfinite(v):
            continue
        sys.stdout.write("%s=%r\n" % (key, v))
    sys.stdout.flush()
    return result
