"""Where a training step's time goes (issue 39): oneDNN's own timing of every primitive it runs, by kind, against
the wall time of the same steps. What oneDNN does not run (the warp, tf.data, the optimizer, Python) is the rest.
With `--ops`, TensorFlow's profiler instead: every op's own time (oneDNN's and the rest), by kind, as a share of
the time the process's threads were busy.

    .venv/bin/python -m benchmarks.profile [--net strong] [--steps 200] [--batch-size 128] [--jobs 2] [--ops]

Run it with ONEDNN_MAX_CPU_ISA=AVX2 for the AVX2 stand-in. `--jobs 2` profiles two members at once, as the planner
runs them (a process and half the cores each), and gives the mean of their shares.
"""

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import time

CHILD = "DIGITS_PROFILE_CHILD"
# onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv:avx512_core_amx,backward_weights,...,0.123
_LINE = re.compile(r"^onednn_verbose,(?:v\d+,)?(?:primitive,)?exec,cpu,([^,]+),([^,]*),([^,]*),.*,([\d.]+)$")


def _member(net: str, steps: int, batch_size: int, threads: int, epochs: int = 1):
    """The config, the compiled `net` and `epochs` x `steps` batches of MNIST, as a member trains them."""
    import dataclasses

    import numpy as np

    from digits import mnist
    from digits.config import load_config
    from digits.data import to_images
    from digits.member import build_model, make_dataset, setup_tensorflow

    cfg = dataclasses.replace(load_config("quick"), batch_size=batch_size)
    setup_tensorflow(cfg, seed=1, threads=threads)
    x_train, y_train, _, _ = mnist.load_all(mnist.fetch_idx(mnist.default_cache_dir()))
    images, labels = to_images(x_train[: steps * batch_size]), y_train[: steps * batch_size].astype(np.int32)
    return cfg, build_model(cfg, net, steps), make_dataset(images, labels, cfg, 1, 0, epochs)


def train_steps(net: str, steps: int, batch_size: int, threads: int = 0) -> tuple[float, int]:
    """Train `net` on `steps` batches as a member does: the wall seconds of all but the first call, and their steps."""
    from digits.member import keras

    cfg, model, dataset = _member(net, steps, batch_size, threads)
    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    print("PROFILE_START", flush=True)
    model.fit(dataset, steps_per_epoch=steps, callbacks=[clock], verbose=0)
    return ends[-1] - ends[0], (len(ends) - 1) * cfg.steps_per_execution


# op kind, by the first rule that matches the op's type and name (TensorFlow's profiler, framework_op_stats)
OP_KINDS = [
    ("tf.data: the warp", lambda t, n: t == "ImageProjectiveTransformV3"),
    ("tf.data: the rest (gather, batching, the pipeline)", lambda t, n: "/" not in n or t == "Dataset"),
    ("optimizer update", lambda t, n: re.search(r"/(adam|rmsprop|sgd)/", n.lower()) is not None),
    ("dropout (masks and their gradients)", lambda t, n: "dropout" in n),
    ("convolution, backprop-filter", lambda t, n: "BackpropFilter" in t),
    ("convolution, backprop-input", lambda t, n: "BackpropInput" in t),
    ("convolution, forward (with bias and ReLU)", lambda t, n: "Conv2D" in t),
    ("batch norm, backward", lambda t, n: "BatchNormGrad" in t),
    ("batch norm, forward (and its statistics by matmul)", lambda t, n: "BatchNorm" in t or "fused_batch_norm" in n),
    ("ReLU gradient", lambda t, n: t == "ReluGrad"),
    ("max pooling, forward and backward", lambda t, n: "MaxPool" in t),
    ("dense layer, softmax, loss, metrics", lambda t, n: "MatMul" in t or "softmax" in n.lower() or "loss" in n
     or "compile_metrics" in n or "accuracy" in n),
    ("casts (bfloat16 <-> float32)", lambda t, n: t == "Cast"),
]


def op_times(net: str, steps: int, batch_size: int, threads: int = 0) -> dict:
    """Train `net` as a member does, two calls unprofiled, then the rest of `steps` under TensorFlow's profiler:
    busy microseconds by kind."""
    import glob
    import json
    import tempfile

    from digits.member import tf

    cfg, model, dataset = _member(net, steps, batch_size, threads, epochs=2)
    warm = 2 * cfg.steps_per_execution
    model.fit(dataset, steps_per_epoch=warm, verbose=0)  # tracing and oneDNN's first calls, not profiled
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps - warm, verbose=0)
        wall = time.perf_counter() - started
        tf.profiler.experimental.stop()
        from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

        path = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]
        table = json.loads(_pywrap_profiler_plugin.xspace_to_tools_data([path], "framework_op_stats", {})[0])[0]
    column = {c["id"]: i for i, c in enumerate(table["cols"])}
    kinds = collections.Counter()
    for row in table["rows"]:
        cells = [c.get("v") for c in row["c"]]
        kind, name = cells[column["type"]], cells[column["operation"]]
        if kind != "IDLE":
            label = next((label for label, rule in OP_KINDS if rule(kind, name)), f"other: {kind}")
            kinds[label] += cells[column["total_self_time"]]
    return {"wall": wall, "images": (steps - warm) * batch_size, "kinds": dict(kinds)}


def shares(out: list, steps_asked: int) -> tuple:
    """From one child's output: its wall seconds, timed steps, and each primitive kind's and ISA's share of the wall."""
    start = out.index("PROFILE_START")
    wall, steps = next(line.split()[1:] for line in out if line.startswith("PROFILE_WALL"))
    wall, steps = float(wall), int(steps)
    per_kind, per_isa = collections.Counter(), collections.Counter()
    scale = steps / steps_asked  # the execs cover every step, the wall time all but the first call's
    for m in filter(None, map(_LINE.match, out[start:])):
        kind, impl, direction, ms = m[1], m[2], m[3], float(m[4])
        per_kind[f"{kind} {direction}".strip()] += ms / 1000 * scale / wall
        per_isa[impl.split(":")[-1] if ":" in impl else impl] += ms / 1000 * scale / wall
    return wall, steps, per_kind, per_isa


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="strong")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=1, help="members at once, a process and cores // jobs threads each")
    parser.add_argument("--ops", action="store_true", help="TensorFlow's profiler, every op, instead of oneDNN's log")
    args = parser.parse_args(argv)
    if os.environ.get(CHILD) and args.ops:
        import json

        print("PROFILE_OPS " + json.dumps(op_times(args.net, args.steps, args.batch_size, int(os.environ[CHILD]))),
              flush=True)
        return
    if os.environ.get(CHILD):
        seconds, steps = train_steps(args.net, args.steps, args.batch_size, int(os.environ[CHILD]))
        print(f"PROFILE_WALL {seconds} {steps}", flush=True)
        return
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    env = {**os.environ, CHILD: str(threads), "TF_CPP_MIN_LOG_LEVEL": "3",
           **({} if args.ops else {"ONEDNN_VERBOSE": "profile_exec"})}
    children = [subprocess.Popen([sys.executable, "-m", "benchmarks.profile", *(argv or sys.argv[1:])], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(args.jobs)]
    outputs = [child.communicate()[0].splitlines() for child in children]
    if any(child.returncode for child in children):
        sys.exit("a profiled member failed")
    if args.ops:
        return print_op_shares(args, threads, outputs)
    results = [shares(out, args.steps) for out in outputs]
    per_kind, per_isa = collections.Counter(), collections.Counter()
    for _, _, kinds, isas in results:
        per_kind.update({k: v / len(results) for k, v in kinds.items()})
        per_isa.update({k: v / len(results) for k, v in isas.items()})
    rate = sum(steps * args.batch_size / wall for wall, steps, _, _ in results)
    print(f"{args.net}, batch {args.batch_size}, {args.jobs} member(s) at once ({threads or 'every'} thread(s) each): "
          f"{rate:,.0f} img/s together")
    for kind, share in per_kind.most_common():
        print(f"  {kind:45s} {100 * share:5.1f}%")
    rest = 1 - sum(per_kind.values())
    print(f"  {'not oneDNN (warp, tf.data, Eigen ops, optimizer, Python)':45s} {100 * rest:5.1f}%")
    print("  by implementation: " + ", ".join(f"{isa} {100 * share:.1f}%" for isa, share in per_isa.most_common(6)))


def print_op_shares(args, threads: int, outputs: list):
    import json

    results = [json.loads(next(line for line in out if line.startswith("PROFILE_OPS "))[12:]) for out in outputs]
    rate = sum(r["images"] / r["wall"] for r in results)
    kinds = collections.Counter()
    for r in results:
        busy = sum(r["kinds"].values())
        kinds.update({k: v / busy / len(results) for k, v in r["kinds"].items()})
    busy_per_wall = statistics.mean(sum(r["kinds"].values()) / 1e6 / r["wall"] for r in results)
    print(f"{args.net}, batch {args.batch_size}, {args.jobs} member(s) at once ({threads or 'every'} thread(s) each), "
          f"TensorFlow's profiler: {rate:,.0f} img/s together; threads busy {busy_per_wall:.2f} s per wall second")
    for kind, share in kinds.most_common():
        print(f"  {kind:55s} {100 * share:5.1f}%")


if __name__ == "__main__":
    main()
