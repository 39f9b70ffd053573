# A stand-in for IPython inside images built by fairing's `notebook` preprocessor, shipped unless the
# notebook's requirements include ipython (then the real one is used). It covers
# what notebooks call outside a kernel: get_ipython() and IPython.display, printing a text form.
from fairing_nb import get_ipython  # noqa: F401
from .display import display  # noqa: F401

version_info = (0, 0, 0, "fairing-shim")
__version__ = "0.0.0+fairing-shim"


def embed(*args, **kwargs):
    raise RuntimeError("IPython.embed() needs the real IPython; add ipython to the notebook's requirements")
