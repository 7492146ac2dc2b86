"""Where a training step's time goes (issue 39): oneDNN's own timing of every primitive it runs, by kind, against
the wall time of the same steps. What oneDNN does not run (the warp, tf.data, the optimizer, Python) is the rest.

    .venv/bin/python -m benchmarks.profile [--net strong] [--steps 200] [--batch-size 128]

Run it with ONEDNN_MAX_CPU_ISA=AVX2 for the AVX2 stand-in. One member alone, every core (not two at once).
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import time

CHILD = "DIGITS_PROFILE_CHILD"
# onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv:avx512_core_amx,backward_weights,...,0.123
_LINE = re.compile(r"^onednn_verbose,(?:v\d+,)?(?:primitive,)?exec,cpu,([^,]+),([^,]*),([^,]*),.*,([\d.]+)$")


def train_steps(net: str, steps: int, batch_size: int) -> float:
    """Train `net` on `steps` batches of MNIST as a member does; the wall seconds of all but the first call."""
    import dataclasses

    import numpy as np

    from digits import mnist
    from digits.config import load_config
    from digits.data import to_images
    from digits.member import build_model, keras, make_dataset, setup_tensorflow

    cfg = dataclasses.replace(load_config("quick"), batch_size=batch_size)
    setup_tensorflow(cfg, seed=1)
    x_train, y_train, _, _ = mnist.load_all(mnist.fetch_idx(mnist.default_cache_dir()))
    images, labels = to_images(x_train[: steps * batch_size]), y_train[: steps * batch_size].astype(np.int32)
    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    model = build_model(cfg, net, steps)
    print("PROFILE_START", flush=True)
    model.fit(make_dataset(images, labels, cfg, 1, 0, 1), steps_per_epoch=steps, callbacks=[clock], verbose=0)
    return ends[-1] - ends[0], (len(ends) - 1) * cfg.steps_per_execution


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="strong")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    if os.environ.get(CHILD):
        seconds, steps = train_steps(args.net, args.steps, args.batch_size)
        print(f"PROFILE_WALL {seconds} {steps}", flush=True)
        return
    env = {**os.environ, CHILD: "1", "ONEDNN_VERBOSE": "profile_exec", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.profile", *(argv or sys.argv[1:])], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    start = out.index("PROFILE_START")
    wall, steps = next(line.split()[1:] for line in out if line.startswith("PROFILE_WALL"))
    wall, steps = float(wall), int(steps)
    per_kind, per_isa = collections.Counter(), collections.Counter()
    for m in filter(None, map(_LINE.match, out[start:])):
        kind, impl, direction, ms = m[1], m[2], m[3], float(m[4])
        per_kind[f"{kind} {direction}".strip()] += ms / 1000
        per_isa[impl.split(":")[-1] if ":" in impl else impl] += ms / 1000
    scale = steps / args.steps  # the execs cover every step, the wall time all but the first call's
    print(f"{args.net}, batch {args.batch_size}, {steps} timed steps: {wall:.2f} s wall, "
          f"{steps * args.batch_size / wall:,.0f} img/s")
    onednn = sum(per_kind.values()) * scale
    for kind, seconds in per_kind.most_common():
        print(f"  {kind:45s} {100 * seconds * scale / wall:5.1f}%")
    print(f"  {'not oneDNN (warp, tf.data, Eigen ops, optimizer, Python)':45s} {100 * (1 - onednn / wall):5.1f}%")
    print("  by implementation: " + ", ".join(f"{isa} {100 * s * scale / wall:.1f}%" for isa, s in
                                              per_isa.most_common(6)))


if __name__ == "__main__":
    main()
