"""Package-data templates (Dockerfile, shims). Rendered with `string.Template`: `${name}` is a value,
`$$` a literal dollar sign. No Jinja: the templates are small and a missing value must fail loudly."""
from __future__ import annotations

from importlib.resources import files
from string import Template


def load(name: str) -> str:
    """The raw text of template `name` (a file next to this module)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """Template `name` with every `${key}` replaced; a missing key raises KeyError."""
    return Template(load(name)).substitute(values)
