"""Publishing: sending a built image value to where it will run from (ko's pkg/publish, beside
pkg/build). Builders make image values; a publisher sends one to its target and pins it:

- target.py    the one target parser: registry/repo[:tag], oci:DIR[:tag], or an engine name
- registry.py  push an image value's missing blobs and its manifest (or pin what a build pushed)
- layout.py    write an image value into an OCI image layout directory
- engine.py    keep an engine-built image in the engine, or have the engine push it
- pick.py      the one choice of publisher for an image value and a target (the pipeline calls it)
"""
