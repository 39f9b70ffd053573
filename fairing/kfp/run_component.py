# Entrypoint of a fairing image used as a Kubeflow Pipelines component. Runs inside the image,
# with only the standard library (and cloudpickle, for functions).
#
#   run_component.py --mode function|script --types JSON --result PATH --metrics PATH
#                    [--outputs DIR] [--executor-input JSON] [--exec JSON] -- --NAME VALUE ...
#
# The inputs arrive as text (KFP's inputValue); --types converts them. A function is called with
# them as keyword arguments and its return value, as JSON, is the `result` output; a script gets
# them as --NAME VALUE arguments and its last output line is the result. Both print through a tee
# that collects `name=value` metrics into the `metrics` output. --outputs is the local path KFP
# gives the `outputs` artifact: it is created as a directory and set as FAIRING_OUTPUT_DIR (the
# outputs contract of every fairing workload), so what the code writes there is the artifact.
# --executor-input is KFP's executor input ({{$}}): after a successful run the executor output
# file it names lists the `outputs` artifact (its name, uri and metadata, as KFP gave them), the
# way kfp's own Python components report artifacts; kfp.local reads artifacts only from there.
#
#   run_component.py --image-default JSON [COMMAND ...]
#
# The image's ENTRYPOINT (pipeline.prepare's `launcher`): runs COMMAND, or without one the image's
# default command (JSON). KFP on a cluster replaces the ENTRYPOINT with the component's command;
# kfp.local's DockerRunner passes that command as arguments (Docker's CMD) instead, so without
# this the image's own entrypoint would run and ignore it.
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PAIR = re.compile(r"(?<![\w.\-/])([A-Za-z_][\w.\-/]*)\s*=\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+))(?![\w.:/-])")
STEP_KEYS = ("step", "epoch", "iteration", "iter")


class Metrics:
    def __init__(self):
        self.values = {}

    def feed(self, line):
        if "FAIRING_RESULT:" in line:
            return
        for m in PAIR.finditer(line):
            if m.group(1) not in STEP_KEYS:
                self.values[m.group(1)] = float(m.group(2))


class Tee:
    """sys.stdout for the function: writes through and feeds whole lines to the metrics."""

    def __init__(self, out, metrics):
        self.out, self.metrics, self.buf = out, metrics, ""

    def write(self, s):
        self.out.write(s)
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.metrics.feed(line)
        return len(s)

    def flush(self):
        self.out.flush()


def convert(value, kind):
    if kind == "Integer":
        return int(float(value)) if value not in ("", None) else None
    if kind == "Float":
        return float(value)
    if kind == "Boolean":
        return str(value).strip().lower() in ("true", "1", "yes")
    if kind in ("JsonObject", "JsonArray"):
        return json.loads(value)
    return value


def parse(argv):
    opts, rest = {}, []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    for i in range(0, len(argv) - 1, 2):
        opts[argv[i].lstrip("-")] = argv[i + 1]
    params = {}
    for i in range(0, len(rest) - 1, 2):
        params[rest[i][2:]] = rest[i + 1]
    return opts, params


def write(path, text):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def run_function(params, metrics):
    sys.path.insert(0, os.path.dirname(HERE))
    import cloudpickle

    with open(os.path.join(HERE, "function.pkl"), "rb") as f:
        f.readline()  # the header the function shim reads; the version check is that shim's job
        fn, args, kwargs = cloudpickle.loads(f.read())
    real = sys.stdout
    sys.stdout = Tee(real, metrics)
    try:
        result = fn(*args, **{**kwargs, **params})
    finally:
        sys.stdout.flush()
        sys.stdout = real
    try:
        return json.dumps(result)
    except (TypeError, ValueError):
        return json.dumps(repr(result))


def run_script(command, params, metrics):
    argv = list(command)
    for k, v in params.items():
        argv += ["--" + k, str(v)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    last = ""
    for line in p.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        metrics.feed(line)
        if line.strip():
            last = line.rstrip("\n")
    if p.wait() != 0:
        sys.exit(p.returncode)
    return last


def launch(argv):
    command = argv[2:] or json.loads(argv[1])
    os.execvp(command[0], command)


def main():
    if sys.argv[1:2] == ["--image-default"]:
        return launch(sys.argv[1:])
    opts, raw = parse(sys.argv[1:])
    types = json.loads(opts.get("types") or "{}")
    params = {k: convert(v, types.get(k, "String")) for k, v in raw.items()}
    metrics = Metrics()
    if opts.get("outputs"):
        os.makedirs(opts["outputs"], exist_ok=True)
        os.environ["FAIRING_OUTPUT_DIR"] = opts["outputs"]
    if opts["mode"] == "function":
        result = run_function(params, metrics)
    else:
        result = run_script(json.loads(opts["exec"]), params, metrics)
    write(opts["result"], result)
    write(opts["metrics"], json.dumps(metrics.values, sort_keys=True))
    if opts.get("executor-input"):
        write_executor_output(json.loads(opts["executor-input"]))
    return 0


def write_executor_output(executor_input):
    outputs = executor_input.get("outputs") or {}
    path = outputs.get("outputFile")
    if not path:
        return
    artifacts = {}
    for name, entry in (outputs.get("artifacts") or {}).items():
        artifacts[name] = {"artifacts": [{k: a[k] for k in ("name", "uri", "metadata") if k in a}
                                         for a in entry.get("artifacts") or []]}
    write(path, json.dumps({"artifacts": artifacts}))


if __name__ == "__main__":
    sys.exit(main())
