import ast, json, os, sys, traceback
res = os.fdopen(os.dup(4), "w"); ctl = os.fdopen(os.dup(3), "r")
os.close(3); os.close(4)
g = {"__name__": "__main__"}
def display(*objs):
    for o in objs:
        if hasattr(o, "_repr_html_"): outputs.append({"mime": "text/html", "data": o._repr_html_()})
        else: outputs.append({"mime": "text/plain", "data": repr(o)})
g["display"] = display
res.write(json.dumps({"ready": True, "language": "python"}) + "\n"); res.flush()
for line in ctl:
    c = json.loads(line); outputs = []; r = {"id": c["id"]}
    try:
        tree = ast.parse(c["code"], "<cell %d>" % c["id"])
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell %d>" % c["id"], "exec"), g)
        if last is not None:
            v = eval(compile(last, "<cell %d>" % c["id"], "eval"), g)
            if v is not None: r["value"] = repr(v)
    except BaseException as e:
        r["error"] = {"name": type(e).__name__, "message": str(e), "traceback": "".join(traceback.format_exception(e))}
    if "matplotlib.pyplot" in sys.modules:
        import io, base64
        plt = sys.modules["matplotlib.pyplot"]
        for n in plt.get_fignums():
            b = io.BytesIO(); plt.figure(n).savefig(b, format="png"); outputs.append({"mime": "image/png", "data": base64.b64encode(b.getvalue()).decode()})
        plt.close("all")
    if outputs: r["outputs"] = outputs
    sys.stdout.flush(); sys.stderr.flush()
    res.write(json.dumps(r) + "\n"); res.flush()
