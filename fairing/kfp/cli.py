"""`fair export kfp ENTRY -o step.yaml`: registered in fairing.cli with one line."""
from pathlib import Path
from typing import Annotated, List, Optional

import typer

app = typer.Typer(help="Export an entry point as something other tools run.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command(help="Build ENTRY (FILE.py:FUNCTION, a script or a directory) and write a Kubeflow Pipelines "
                  "component pinned to the image digest.")
def kfp(entry: Annotated[str, typer.Argument(help="FILE.py:FUNCTION, a .py script or a directory")],
        output: Annotated[Path, typer.Option("--output", "-o", help="where to write the component YAML")],
        registry: Annotated[Optional[str], typer.Option("--registry", help="push the image here, e.g. 127.0.0.1:5000/team")] = None,
        base_image: Annotated[Optional[str], typer.Option("--base-image", help="image to add the code to")] = None,
        requirements: Annotated[Optional[str], typer.Option("--requirements", "-r", help="requirements.txt, or pins separated by commas")] = None,
        image_name: Annotated[Optional[str], typer.Option("--image-name", help="repository name for the image")] = None,
        param: Annotated[Optional[List[str]], typer.Option("--param", help="script input NAME[:TYPE][=DEFAULT] (repeatable)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="component name (default: from the entry)")] = None,
        outputs_type: Annotated[str, typer.Option("--outputs-type", help="type of the `outputs` artifact (what the code "
                                                  "writes to $FAIRING_OUTPUT_DIR): artifact, model or dataset")] = "artifact",
        profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="config file profile")] = None) -> None:
    import sys

    from .. import settings as settings_mod
    from ..progress import Progress
    from . import export

    s = settings_mod.load({"registry": registry, "base_image": base_image, "requirements": requirements,
                           "image_name": image_name}, profile=profile)
    doc = export(entry, output, params=param or (), name=name, outputs_type=outputs_type, settings=s,
                 progress=Progress())
    image = doc["implementation"]["container"]["image"]
    sys.stderr.write(f"fair: wrote {output} (component {doc['name']!r}, image {image})\n")
