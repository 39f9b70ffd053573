"""Done means: a notebook using display(), shell lines, %%writefile, %%time, %%bash and %pip,
converted by the `notebook` preprocessor, runs in the stdlib-only base image through Podman (built
by the append builder, which installs the %pip requirement), and prints what the same notebook
prints under nbclient on this host."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import nbformat
import pytest

from fairing.preprocessors.notebook import NotebookPreprocessor

SIX = "1.17.0"  # installed on the host (so the host run's %pip changes nothing) and on PyPI


def cells():
    code = nbformat.v4.new_code_cell
    return [
        nbformat.v4.new_markdown_cell("# Runs anywhere"),
        code(f"%pip install -q six=={SIX}"),
        code("import six\nfrom IPython.display import HTML, Markdown, display\n"
             "print('six', six.__version__)\ndisplay({'a': 1})\ndisplay(Markdown('**bold** text'))\n"
             "display(HTML('<b>Hi</b> there'))"),
        code("%%writefile config.txt\nlr=0.1\nepochs=2"),
        code("%%writefile -a config.txt\nextra=1"),
        code("files = !ls\nprint(sorted(f for f in files if f.endswith('.txt')))\n"
             "for name in ['x', 'y']:\n    !echo shell {name} $name"),
        code("%%time\nsettings = dict(line.split('=') for line in open('config.txt').read().split())\nsettings"),
        code("%%bash\necho from bash\nwc -l < config.txt"),
        code("len(settings)"),
        code("quiet = 1;\nget_ipython().system('echo via get_ipython')"),
    ]


def write_notebook(path: Path) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=cells()), str(path))
    return path


_TIMES = re.compile(r"^(CPU times: user ).*$|^(Wall time: ).*$", re.M)


def normalize(text: str) -> str:
    """Timings differ run to run; a pty's \\r\\n is a newline."""
    return _TIMES.sub(lambda m: (m.group(1) or m.group(2)) + "<t>", text.replace("\r\n", "\n"))


def nbclient_output(path: Path) -> str:
    """The notebook's output under a real kernel, as text: streams as printed, displays by their
    text form (markdown source, HTML without tags, else text/plain). The %pip cell's own output (pip's
    chatter) is left out: in the image the install happened when the image was built."""
    import nbclient

    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    out = []
    for c in nb.cells:
        if c.cell_type == "code" and c.source.startswith("%pip"):
            continue
        for o in c.get("outputs", []):
            if o["output_type"] == "stream":
                out.append(o["text"])
            elif o["output_type"] in ("display_data", "execute_result"):
                data = o["data"]
                if "text/markdown" in data:
                    text = data["text/markdown"]
                elif "text/html" in data:
                    text = re.sub(r"<[^>]+>", "", data["text/html"])
                else:
                    text = data["text/plain"]
                out.append(text.rstrip("\n") + "\n")
            elif o["output_type"] == "error":
                pytest.fail(f"the notebook failed on the host: {o['ename']}: {o['evalue']}")
    return "".join(out)


EXPECTED = f"""six {SIX}
{{'a': 1}}
**bold** text
Hi there
Writing config.txt
Appending to config.txt
['config.txt']
shell x x
shell y y
CPU times: user <t>
Wall time: <t>
{{'lr': '0.1', 'epochs': '2', 'extra': '1'}}
from bash
3
3
via get_ipython
"""


@pytest.fixture(scope="module")
def host_output(tmp_path_factory):
    """The reference: the notebook under a real kernel on this host (run once for both tests)."""
    return nbclient_output(write_notebook(tmp_path_factory.mktemp("host") / "anywhere.ipynb"))


def test_host_nbclient_output_is_what_we_expect(host_output):
    assert normalize(host_output) == EXPECTED


def test_converted_notebook_in_the_stdlib_base_image_matches_nbclient(engine, base_image, registry, tmp_path,
                                                                      host_output):
    from fairing.builders.append import AppendBuilder
    from fairing.deployers.local import LocalDeployer

    nb = write_notebook(tmp_path / "anywhere.ipynb")
    ctx = NotebookPreprocessor().prepare(nb)
    assert ctx.requirements == (f"six=={SIX}",)
    # The base image has no IPython: the stand-in ships with the script.
    assert ".fairing/nbshim/IPython/display.py" in ctx.files
    image = AppendBuilder(base_image.docker).build(ctx, f"{registry.host}/fairing-test/nb-{uuid.uuid4().hex[:6]}")
    h = LocalDeployer(mode="container", docker_host=engine.docker_host).deploy(image)
    try:
        assert h.wait(timeout=300) == "Succeeded", "\n".join(h.logs())
        in_image = "".join(line + "\n" for line in h.logs())
    finally:
        h.delete()
    assert normalize(in_image) == normalize(host_output) == EXPECTED


def test_fair_train_runs_the_notebook_in_a_local_container(engine, base_image, tmp_path, host_output):
    """The same notebook through `fair train` as a user runs it: the docker builder installs the %pip
    requirement into the stdlib base image, the local deployer runs it in Podman, the logs are the
    notebook's output, and the install is announced in one line."""
    from tests.test_cli import clean_env, fair

    write_notebook(tmp_path / "anywhere.ipynb")
    r = fair("train", "anywhere.ipynb", "--base-image", base_image.docker, "--local-mode", "container", cwd=tmp_path,
             env=clean_env(DOCKER_HOST=engine.docker_host), check=0)
    assert normalize(r.stdout) == normalize(host_output) == EXPECTED
    assert r.stderr.splitlines()[:2] == [
        f"fair: mode: local container (engine {engine.docker_host}; no cluster: KUBECONFIG is set but empty)",
        f"fair: notebook anywhere.ipynb: requirements from its install lines: six=={SIX}"]
