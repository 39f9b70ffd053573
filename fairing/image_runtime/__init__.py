"""Shims shipped into the image as files. They run with only the stdlib (plus cloudpickle or
nbclient), so they never import fairing and keep to syntax old Pythons can parse: the version
check has to run before anything else can fail."""
