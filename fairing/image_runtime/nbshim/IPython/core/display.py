# Old import path of the display classes (IPython.core.display), kept by many notebooks.
from ..display import *  # noqa: F401,F403
from ..display import display  # noqa: F401
