from fairing_nb import get_ipython  # noqa: F401
