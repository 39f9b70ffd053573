# Part of fairing's stand-in for IPython (see IPython/__init__.py).
