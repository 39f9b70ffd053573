# Runtime helpers for notebooks converted by fairing's `notebook` preprocessor. Runs inside the image
# with only the standard library: the converted script calls these where the notebook had `!cmd`,
# `x = !cmd`, `%%bash`, `%%writefile`, `%%time`, `%%capture` or a cell ending in an expression.
# Behaviour follows IPython 8 (messages, output, errors) so the script prints what the notebook
# printed; anything that needs a kernel (widgets, rich output) becomes a text form.
import io
import os
import re
import subprocess
import sys
import time

__all__ = ["Shell", "SList", "shell"]


class SList(list):
    """What `files = !ls` gives: the output lines, as a list (IPython's SList; .s .n .l .p too)."""

    @property
    def s(self):
        return " ".join(self)

    @property
    def n(self):
        return "\n".join(self)

    @property
    def l(self):  # noqa: E743 - IPython's name
        return list(self)

    @property
    def p(self):
        return list(self)

    def grep(self, pattern):
        return SList(x for x in self if re.search(pattern, x))


_EXPR = re.compile(r"\{([^{}]+)\}")
_DOLLAR = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")


def var_expand(cmd, frame):
    """IPython's expansion of `!cmd` lines: `{expr}` and `$name` from the caller's namespace,
    `$$` is a literal `$`, `{{`/`}}` literal braces. Like IPython, a failing expansion leaves the
    command as written."""
    ns = dict(frame.f_globals)
    ns.update(frame.f_locals)
    try:
        out = _EXPR.sub(lambda m: str(eval(m.group(1), ns)), cmd.replace("{{", "\0").replace("}}", "\1"))
        out = _DOLLAR.sub(lambda m: str(ns[m.group(1)]) if m.group(1) in ns else m.group(0), out)
    except Exception:
        return cmd
    return out.replace("$$", "$").replace("\0", "{").replace("\1", "}")


def _flush():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


class _Capture:
    """What `%%capture var` stores: the cell's captured output."""

    def __init__(self):
        self._out, self._err = io.StringIO(), io.StringIO()

    @property
    def stdout(self):
        return self._out.getvalue()

    @property
    def stderr(self):
        return self._err.getvalue()

    @property
    def outputs(self):
        return []

    def show(self):
        sys.stdout.write(self.stdout)
        sys.stderr.write(self.stderr)

    __call__ = show


class Shell:
    """The `get_ipython()` of a converted notebook: system, getoutput, the cell magics' runtime
    side, and the display hook for a cell's last expression."""

    def __init__(self):
        self.user_ns = sys.modules["__main__"].__dict__
        self._timers = []
        self._captures = []
        self._profiles = []

    # -- shell -------------------------------------------------------------------------------------
    def system(self, cmd, _depth=1):
        """`!cmd`: run through the shell, output straight to the log. Like IPython, a failing
        command does not stop the notebook; its status is in `_exit_code`."""
        cmd = var_expand(cmd, sys._getframe(_depth))
        _flush()
        code = subprocess.call(cmd, shell=True, stderr=subprocess.STDOUT)
        self.user_ns["_exit_code"] = code
        return None

    def getoutput(self, cmd, _depth=1):
        """`x = !cmd`: the output lines (stdout and stderr, as IPython merges them)."""
        cmd = var_expand(cmd, sys._getframe(_depth))
        _flush()
        p = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.user_ns["_exit_code"] = p.returncode
        return SList(p.stdout.decode("utf-8", "replace").splitlines())

    def script(self, argv, cell):
        """`%%bash`, `%%sh`, `%%script CMD`: the cell on the program's stdin; a non-zero exit fails
        the run (IPython 8 raises CalledProcessError too)."""
        if not cell.endswith("\n"):
            cell += "\n"
        _flush()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE)
        except OSError:
            print("Couldn't find program: %r" % argv[0])
            return
        p.communicate(cell.encode("utf-8", "replace"))
        if p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, cell.encode("utf-8", "replace"))

    def writefile(self, filename, cell, append=False):
        """`%%writefile [-a] FILE`, with IPython's messages."""
        filename = var_expand(filename, sys._getframe(1))
        if re.match(r"^('.*')|(\".*\")$", filename):
            filename = filename[1:-1]
        filename = os.path.expanduser(filename)
        if os.path.exists(filename):
            print(("Appending to %s" if append else "Overwriting %s") % filename)
        else:
            print("Writing %s" % filename)
        with io.open(filename, "a" if append else "w", encoding="utf-8") as f:
            f.write(cell)

    # -- line magics that change the process ---------------------------------------------------------
    def chdir(self, path):
        os.chdir(os.path.expanduser(var_expand(path, sys._getframe(1)).strip().strip("'\"") or "~"))
        print(os.getcwd())

    def env(self, arg):
        arg = var_expand(arg, sys._getframe(1)).strip()
        if not arg:
            return dict(os.environ)
        m = re.match(r"^([^=\s]+)\s*[=\s]\s*(.*)$", arg)
        if not m:
            return os.environ.get(arg, "")
        os.environ[m.group(1)] = m.group(2)
        print("env: %s=%s" % (m.group(1), m.group(2)))

    # -- %%time and %%capture ------------------------------------------------------------------------
    def time_start(self):
        self._timers.append((time.perf_counter(), os.times()))
        self._kept = None

    def keep(self, value):
        """A %%time cell's last expression: shown after the timings, as IPython does."""
        self._kept = value
        return value

    def time_stop(self):
        wall0, t0 = self._timers.pop()
        t1 = os.times()
        user, sys_ = t1.user - t0.user, t1.system - t0.system
        print("CPU times: user %s, sys: %s, total: %s" % (_fmt(user), _fmt(sys_), _fmt(user + sys_)))
        print("Wall time: %s" % _fmt(time.perf_counter() - wall0))
        kept, self._kept = getattr(self, "_kept", None), None
        self.displayhook(kept)

    # -- %%timeit and %%prun -------------------------------------------------------------------------
    # The body runs once, in the notebook's namespace (later cells may use what it defines; running
    # it again could repeat side effects), so the statistics are those of that one run, and say so.
    def timeit_start(self):
        self._timers.append((time.perf_counter(), None))

    def timeit_stop(self):
        wall0, _ = self._timers.pop()
        pm = _symbol("\xb1", "+-")
        print("%s %s 0 ns per loop (mean %s std. dev. of 1 run, 1 loop each)" % (_fmt(time.perf_counter() - wall0), pm, pm))

    def prun_start(self, opts=""):
        """Returns the profiler: the script calls its disable() itself, so that nothing of this
        module is in the profile (IPython's shows the same `disable` line)."""
        import cProfile
        import pstats  # noqa: F401  (imported now, not while profiling)

        prof = cProfile.Profile()
        self._profiles.append((prof, opts))
        prof.enable()
        return prof

    def prun_stop(self):
        """Print (or save) the profile as IPython's %%prun does: -s KEY (sort, default internal
        time), -l LIMIT, -q (no printout), -T FILE (text), -D FILE (pstats dump)."""
        import pstats

        prof, opts = self._profiles.pop()
        prof.disable()
        sort, limits, quiet, text_file, dump_file = [], [], False, None, None
        words = opts.split()
        i = 0
        while i < len(words):
            w = words[i]
            arg = words[i + 1] if i + 1 < len(words) else None
            if w in ("-s", "-l", "-T", "-D") and arg is not None:
                if w == "-s":
                    sort.append(arg)
                elif w == "-l":
                    limits.append(int(arg) if arg.isdigit() else float(arg) if _is_float(arg) else arg)
                elif w == "-T":
                    text_file = arg
                else:
                    dump_file = arg
                i += 2
                continue
            quiet = quiet or w == "-q"
            i += 1
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats(*(sort or ["time"]))
        stats.print_stats(*limits)
        text = out.getvalue().rstrip("\n")
        if not quiet:
            print(text)
        if dump_file:
            prof.dump_stats(dump_file)
            print("\n*** Profile stats marshalled to file %r." % dump_file)
        if text_file:
            with io.open(text_file, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            print("\n*** Profile printout saved to text file %r." % text_file)

    def capture_start(self, name=None, stdout=True, stderr=True):
        cap = _Capture()
        _flush()
        self._captures.append((name, sys.stdout, sys.stderr, sys.excepthook))
        if stdout:
            sys.stdout = cap._out
        if stderr:
            sys.stderr = cap._err
        saved = self._captures[-1]

        def hook(*exc):
            # A failing captured cell must still show its traceback.
            sys.stdout, sys.stderr = saved[1], saved[2]
            saved[3](*exc)

        sys.excepthook = hook
        if name:
            self.user_ns[name] = cap
        return cap

    def capture_stop(self):
        _, out, err, hook = self._captures.pop()
        sys.stdout, sys.stderr, sys.excepthook = out, err, hook

    # -- output ----------------------------------------------------------------------------------------
    def displayhook(self, value):
        """A cell's last expression: shown like IPython's Out (None is not shown)."""
        if value is not None:
            _display(value)
        return value

    def run_line_magic(self, name, line):
        if name == "pwd":
            return os.getcwd()
        if name == "env":
            return self.env(line)
        if name in ("sx", "system"):
            return self.getoutput(line, _depth=2)
        raise RuntimeError("%%%s does not run outside IPython; add ipython to the notebook's requirements "
                           "or remove the line" % name)


def _symbol(fancy, plain):
    """`fancy` if stdout can encode it (IPython prints "+-" otherwise)."""
    try:
        fancy.encode(getattr(sys.stdout, "encoding", None) or "ascii")
        return fancy
    except (UnicodeEncodeError, LookupError):
        return plain


def _is_float(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _fmt(seconds):
    # IPython's _format_time, enough for the common ranges.
    if seconds >= 1:
        return "%.2f s" % seconds
    for unit, scale in (("ms", 1e3), ("\xb5s", 1e6), ("ns", 1e9)):
        if seconds * scale >= 1:
            return "%.3g %s" % (seconds * scale, unit)
    return "0 ns"


def _display(obj):
    text = getattr(obj, "_fairing_text", None)
    print(text() if callable(text) else repr(obj))
    sys.stdout.flush()


shell = Shell()


def get_ipython():
    return shell


def _display_cell(kind, body):
    """`%%html`, `%%markdown`, `%%latex`, `%%svg`, `%%javascript`: the cell displayed as that type."""
    import importlib

    d = importlib.import_module("IPython.display")  # `from IPython import display` is the function

    cls = {"html": d.HTML, "markdown": d.Markdown, "latex": d.Latex, "svg": d.SVG,
           "javascript": d.Javascript, "js": d.Javascript}[kind]
    d.display(cls(body))


Shell.display_cell = staticmethod(_display_cell)
