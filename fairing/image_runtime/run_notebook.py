# Entrypoint shim for fairing's `full_notebook` preprocessor. Runs inside the image.
#
# Reads notebook.json (written by fairing) next to this file, injects parameters papermill-style
# (a new cell tagged `injected-parameters` after the cell tagged `parameters`, or first), executes
# the notebook with nbclient, streams each cell's text output to the log, and writes the executed
# notebook to $FAIRING_OUTPUT_DIR/<name>.executed.ipynb, also when a cell fails.
# Exit codes: 0 ok, 1 a cell raised, 2 fairing could not run the notebook.
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARAMS_ENV = "FAIRING_NOTEBOOK_PARAMETERS"


def fail(msg, code=2):
    sys.stdout.flush()
    sys.stderr.write("fairing: " + msg + "\n")
    sys.stderr.flush()
    return code


def parameters(defaults):
    """The parameters from fairing, overridden key by key by $FAIRING_NOTEBOOK_PARAMETERS (JSON)."""
    params = dict(defaults)
    raw = os.environ.get(PARAMS_ENV)
    if raw:
        extra = json.loads(raw)
        if not isinstance(extra, dict):
            raise ValueError("%s must be a JSON object" % PARAMS_ENV)
        params.update(extra)
    return params


def inject(nb, params):
    """Insert a parameters cell; returns its index (or None when there are no parameters)."""
    if not params:
        return None
    import nbformat

    source = "# Parameters\n" + "".join("%s = %r\n" % (k, v) for k, v in sorted(params.items()))
    cell = nbformat.v4.new_code_cell(source=source, metadata={"tags": ["injected-parameters"]})
    cell.pop("id", None)  # nbformat gives new cells an id only for nbformat >= 4.5 notebooks
    if nb.get("nbformat_minor", 0) >= 5:
        import uuid

        cell["id"] = uuid.uuid4().hex[:8]
    at = 0
    for i, c in enumerate(nb.cells):
        if "parameters" in (c.get("metadata", {}).get("tags") or []):
            at = i + 1
            break
    nb.cells.insert(at, cell)
    return at


def echo(cell=None, **_):
    """nbclient hook: print what a cell printed, so the workload's log shows progress."""
    for out in (cell or {}).get("outputs", []):
        if out.get("output_type") == "stream":
            stream = sys.stderr if out.get("name") == "stderr" else sys.stdout
            stream.write(out.get("text", ""))
            stream.flush()
        elif out.get("output_type") == "execute_result":
            text = (out.get("data") or {}).get("text/plain")
            if text:
                print(text, flush=True)


def exit_on_sigterm():
    # As a container's PID 1, Python ignores SIGTERM (PID 1 gets no default signal action): a
    # deleted pod (an interrupted run) would go on for its whole grace period. Exit as any process.
    if os.getpid() == 1:
        import signal

        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main():
    exit_on_sigterm()
    with open(os.path.join(HERE, "notebook.json")) as f:
        meta = json.load(f)
    root = os.path.dirname(HERE)
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as e:
        return fail("%s; add nbclient and ipykernel to the requirements" % e)
    try:
        params = parameters(meta.get("parameters") or {})
    except ValueError as e:
        return fail(str(e))
    name = meta["notebook"]
    nb = nbformat.read(os.path.join(root, name), as_version=4)
    inject(nb, params)
    out_dir = os.environ.get("FAIRING_OUTPUT_DIR") or meta["output_dir"]
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, os.path.splitext(name)[0] + ".executed.ipynb")
    client = NotebookClient(
        nb,
        timeout=meta.get("timeout"),
        kernel_name=meta.get("kernel", "python3"),
        resources={"metadata": {"path": root}},
        on_cell_executed=echo,
    )
    code = 0
    try:
        client.execute()
    except CellExecutionError as e:
        sys.stderr.write(str(e) + "\n")
        code = fail("a cell of %s raised; the executed notebook is in %s" % (name, out), code=1)
    except Exception as e:  # the kernel did not start or died
        code = fail("could not execute %s: %s: %s" % (name, type(e).__name__, e))
    finally:
        nbformat.write(nb, out + ".tmp")
        os.replace(out + ".tmp", out)
    if code == 0:
        print("fairing: executed notebook written to %s" % out, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
