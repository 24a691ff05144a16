# The python driver of sandboxd's interpreter sessions: one long-lived
# interpreter whose global namespace every cell runs in. The protocol is
# described in drivers.go; in short, cells arrive as JSON lines on fd 3 and
# results leave as JSON lines on fd 4, while the cells' own output goes to
# fds 1 and 2 as it is written.
#
# Standard library only. The driver runs as the user's code's own process:
# it keeps its channels and its SIGINT handling out of the way of ordinary
# code, but it is not a security boundary.

import signal

# Installed first: a SIGINT while the driver starts or waits for a cell
# must not end it.
_interruptible = False


def _on_sigint(signum, frame):
    # Only a running cell is interrupted; between cells SIGINT is ignored.
    if _interruptible:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)

import ast
import builtins
import fcntl
import json
import linecache
import os
import sys
import types
import warnings

_DRIVER_FILE = sys._getframe().f_code.co_filename
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
_COMPILE_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

# What the driver calls, bound now so that a cell that patches os or json
# does not break the protocol by accident.
_os_read = os.read
_os_write = os.write
_os_close = os.close
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_decode = json.loads
_dumps = json.dumps


def _hold(fd):
    """Moves fd to a high, close-on-exec descriptor and closes fd itself,
    so that a cell that closes or reuses fds 3 and 4 does not reach the
    driver's channels, and programs the cell starts do not inherit them."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except Exception:
        soft = 1024
    if soft < 0 or soft > 1024:
        soft = 1024
    try:
        held = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(10, soft - 32))
    except OSError:
        held = os.dup(fd)  # close-on-exec too
    _os_close(fd)
    return held


_control = _hold(3)
_results = _hold(4)

# matplotlib, if the user imports it, draws off-screen; and show() has
# nothing to show then, which it need not say.
os.environ["MPLBACKEND"] = "Agg"
warnings.filterwarnings("ignore", message=r".*(non-GUI backend|non-interactive).*")

# The cells' namespace is the __main__ module's, as in the REPL, so that
# pickle and multiprocessing find what cells define.
_main = types.ModuleType("__main__")
_main.__builtins__ = builtins
_namespace = _main.__dict__
_driver_module = sys.modules["__main__"]
sys.modules["__main__"] = _main
sys.argv = [""]
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(_DRIVER_FILE)):
    sys.path[0] = ""  # the working directory, as in the REPL

_outputs = []  # the running cell's rich outputs
_loop = None  # the event loop of cells that await, made on first use


def _write(message):
    data = (_encode(message) + "\n").encode()
    while data:
        data = data[_os_write(_results, data):]


def _mime_output(obj):
    """One rich output for obj: its richest _repr_*_ or its repr."""
    if not isinstance(obj, type):  # a class's _repr_*_ are unbound
        for method, mime in (
            ("_repr_png_", "image/png"),
            ("_repr_svg_", "image/svg+xml"),
            ("_repr_html_", "text/html"),
            ("_repr_json_", "application/json"),
        ):
            repr_method = getattr(obj, method, None)
            if not callable(repr_method):
                continue
            data = repr_method()
            if isinstance(data, tuple):  # (data, metadata), as IPython allows
                data = data[0]
            if data is None:
                continue
            if mime == "image/png":
                if isinstance(data, (bytes, bytearray, memoryview)):
                    import base64

                    data = base64.b64encode(data).decode("ascii")
                # A str is taken to be base64 already.
            elif mime == "application/json":
                data = _dumps(data)
            elif isinstance(data, (bytes, bytearray)):
                data = bytes(data).decode("utf-8", "replace")
            return {"mime": mime, "data": str(data)}
        if _is_figure(obj):
            data = _figure_png(obj)
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:
                pyplot.close(obj)  # shown now, not again after the cell
            return {"mime": "image/png", "data": data}
    return {"mime": "text/plain", "data": repr(obj)}


def display(*objs):
    """Shows each object in the cell's result: as PNG, SVG, HTML or JSON
    when it has _repr_png_, _repr_svg_, _repr_html_ or _repr_json_ (a
    matplotlib figure as PNG), else as its repr."""
    for obj in objs:
        _outputs.append(_mime_output(obj))


def _is_figure(obj):
    return type(obj).__module__.startswith("matplotlib") and hasattr(obj, "savefig") and hasattr(obj, "canvas")


def _figure_png(fig):
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _capture_figures():
    """Renders pyplot's open figures into the outputs, then closes them all."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    try:
        for num in pyplot.get_fignums():
            _outputs.append({"mime": "image/png", "data": _figure_png(pyplot.figure(num))})
    finally:
        pyplot.close("all")


def _run(code):
    """Runs a code object in the namespace; a coroutine (a cell that
    awaits at top level) runs to its end on the driver's event loop."""
    global _loop
    result = eval(code, _namespace)
    if code.co_flags & _CO_COROUTINE:
        import asyncio

        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            asyncio.set_event_loop(_loop)
        task = _loop.create_task(result)
        try:
            result = _loop.run_until_complete(task)
        except BaseException as e:
            if task.done():
                raise
            # Interrupted while the loop waited: the task is not to run on
            # in later cells, and the traceback shows where it waited.
            task.cancel()
            tb = None
            for frame in reversed(task.get_stack()):
                tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
            raise e.with_traceback(tb) from None
    return result


def _execute(source, filename):
    """Runs a cell; returns the repr of its last expression, or None."""
    tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST | _COMPILE_FLAGS, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    _run(compile(tree, filename, "exec", _COMPILE_FLAGS, dont_inherit=True))
    if last is None:
        return None
    value = _run(compile(last, filename, "eval", _COMPILE_FLAGS, dont_inherit=True))
    if value is None:
        return None
    builtins._ = value  # as the REPL does; a global _ of the user's wins
    return repr(value)


def _interruptibly(fn, *args):
    """Calls fn with SIGINT raising KeyboardInterrupt; returns its result
    and the exception it raised, if any."""
    global _interruptible
    try:
        try:
            _interruptible = True
            return fn(*args), None
        finally:
            # A plain store: no signal handler runs between the finally's
            # start and it, so nothing is raised past this point.
            _interruptible = False
    except BaseException as e:
        return None, e


def _user_traceback(tb):
    """The traceback from the user's cell on: the frames above it (the
    driver's, asyncio's) and the driver's SIGINT handler's below are
    dropped."""
    start = tb
    while start is not None and not start.tb_frame.f_code.co_filename.startswith("<cell "):
        start = start.tb_next
    last_user = None  # none without a cell frame: a SyntaxError, say
    t = start
    while t is not None:
        if t.tb_frame.f_code.co_filename != _DRIVER_FILE:
            last_user = t
        t = t.tb_next
    if last_user is None:
        return None
    last_user.tb_next = None
    return start


def _describe(e):
    name = type(e).__name__
    try:
        message = str(e)
    except BaseException:
        message = "<exception str() failed>"
    try:
        import traceback

        text = "".join(traceback.format_exception(type(e), e, _user_traceback(e.__traceback__)))
    except BaseException:
        text = name + ": " + message + "\n"
    return {"name": name, "message": message, "traceback": text}


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass  # replaced, closed or broken by the cell: nothing to flush


def _cell(cell_id, source):
    global _outputs
    _outputs = []
    filename = "<cell %s>" % cell_id
    # The traceback shows the cell's lines, as the REPL's shows its input.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    if "display" not in _namespace:
        _namespace["display"] = display
    if not hasattr(builtins, "display"):
        builtins.display = display
    value, error = _interruptibly(_execute, source, filename)
    _, figure_error = _interruptibly(_capture_figures)
    result = {"id": cell_id}
    if error is None:
        error = figure_error
    if error is not None:
        result["error"] = _describe(error)
        value = None
    if value is not None:
        result["value"] = value
    if _outputs:
        result["outputs"] = _outputs
    _outputs = []
    if signal.getsignal(signal.SIGINT) is not _on_sigint:
        signal.signal(signal.SIGINT, _on_sigint)  # a cell's handler holds for that cell only
    _flush()
    return result


def _handle(line):
    try:
        message = _decode(line)
    except ValueError as e:
        return {"id": None, "error": {"name": "ProtocolError", "message": "cell: %s" % e, "traceback": ""}}
    cell_id = message.get("id") if isinstance(message, dict) else None
    source = message.get("code") if isinstance(message, dict) else None
    if not isinstance(cell_id, int) or isinstance(cell_id, bool):
        cell_id = None
    if cell_id is None or not isinstance(source, str):
        error = 'a cell is {"id": <int>, "code": <string>}'
        return {"id": cell_id, "error": {"name": "ProtocolError", "message": error, "traceback": ""}}
    try:
        return _cell(cell_id, source)
    except BaseException as e:  # the driver's own failure, a last resort
        return {"id": cell_id, "error": {"name": type(e).__name__, "message": str(e), "traceback": ""}}


def _lines():
    buf = bytearray()
    searched = 0
    while True:
        nl = buf.find(b"\n", searched)
        if nl >= 0:
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            searched = 0
            if line.strip():
                yield line
            continue
        searched = len(buf)
        chunk = _os_read(_control, 1 << 16)
        if not chunk:
            if buf.strip():
                yield bytes(buf)
            return
        buf += chunk


def main():
    builtins.display = display  # for modules the cells import, too
    _namespace["display"] = display
    _write({"ready": True, "language": "python", "version": "%d.%d.%d" % sys.version_info[:3]})
    for line in _lines():
        _write(_handle(line))
    _flush()
    os._exit(0)  # EOF: no atexit or thread joins the cells left behind


main()
