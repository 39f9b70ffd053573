# Entrypoint shim for fairing's `function` preprocessor. Runs inside the image.
#
# function.pkl = one JSON header line + a cloudpickle of (function, args, kwargs). The header is
# read first so a Python mismatch is reported in one line instead of an unpickling traceback.
# Exit codes: 0 ok, 1 the function raised (traceback printed), 2 fairing could not run it.
import base64
import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg, code=2):
    sys.stdout.flush()
    sys.stderr.write("fairing: " + msg + "\n")
    sys.stderr.flush()
    return code


def exit_on_sigterm():
    # As a container's PID 1, Python ignores SIGTERM (PID 1 gets no default signal action): a
    # deleted pod (an interrupted run) would go on for its whole grace period. Exit as any process.
    if os.getpid() == 1:
        import signal

        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main():
    # Modules shipped next to the function (the context root) import by reference.
    exit_on_sigterm()
    sys.path.insert(0, os.path.dirname(HERE))
    with open(os.path.join(HERE, "function.pkl"), "rb") as f:
        header = json.loads(f.readline().decode("utf-8"))
        payload = f.read()
    want = header["python"]
    have = "%d.%d" % sys.version_info[:2]
    if want != have:
        return fail("function was pickled with Python %s but the image runs Python %s; "
                    "use a base image with Python %s" % (want, have, want))
    try:
        import cloudpickle
    except ImportError:
        return fail("cloudpickle is not installed in the image; add cloudpickle==%s to the requirements"
                    % header.get("cloudpickle", ""))
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
    except Exception as e:
        traceback.print_exc()
        return fail("could not unpickle function %s: %s: %s (is every module it imports installed in the image?)"
                    % (header.get("function"), type(e).__name__, e))
    try:
        result = fn(*args, **kwargs)
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
        result = None
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    try:
        data = cloudpickle.dumps(result)
    except Exception as e:
        return fail("function %s returned a %s that cannot be pickled: %s"
                    % (header.get("function"), type(result).__name__, e), code=1)
    out_dir = os.environ.get("FAIRING_OUTPUT_DIR") or header["output_dir"]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "result.pkl")
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    sys.stdout.flush()
    encoded = base64.b64encode(data).decode("ascii")
    limit = int(header.get("log_limit", 4 << 20))
    if os.environ.get("FAIRING_OUTPUTS_STORE"):
        # The outputs store keeps result.pkl (outputs.py saves it after this exits): only small
        # values travel in the log too.
        limit = min(limit, 64 << 10)
    if len(encoded) > limit:
        # Too big for a log line; ':' never occurs in base64, so parse_result can tell them apart.
        print("%stoo-large:%d:%s" % (header["marker"], len(data), path), flush=True)
    else:
        print(header["marker"] + encoded, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
