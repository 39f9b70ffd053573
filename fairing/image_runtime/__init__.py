"""Everything that runs inside the built image, shipped there as files by the preprocessors:
run_function.py (the function shim), run_notebook.py (the notebook runner), model_server.py (the
model server, with the Open Inference Protocol tensor codec that fairing's client imports too).
They never import fairing (the image does not have it): the stdlib, plus cloudpickle, nbclient or
starlette/uvicorn as each needs, and syntax old Pythons can parse, since the version check has to
run before anything else can fail."""

# The outputs shim and the modules it imports from beside itself (metrics for a retrain's gate, the
# model registry's documents), shipped together into the context's .fairing/ dir.
SHIM_FILES = ("outputs.py", "outputs_s3.py", "metriclines.py", "modeldocs.py", "modellayer.py")
