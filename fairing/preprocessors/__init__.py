"""Preprocessors: turn an entry (a script or directory, a notebook, a function) into a BuildContext.

Loaded by name through fairing.stages.PREPROCESSORS; each module imports its heavy libraries
(nbformat, cloudpickle, pathspec) only when used."""
