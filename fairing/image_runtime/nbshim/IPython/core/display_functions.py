from ..display import clear_output, display, update_display  # noqa: F401
