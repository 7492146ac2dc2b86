"""`digits describe`: each member's architecture (layers, output shapes, parameters) and the total."""

import numpy as np

from .config import TrainConfig


def member_architectures(cfg: TrainConfig) -> list[str]:
    """The architecture of each member: the config's list cycled over its members."""
    return [cfg.architectures[i % len(cfg.architectures)] for i in range(cfg.members)]


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def layer_table(model) -> list[str]:
    """Lines of a Keras-summary-like table: layer, output shape, parameters."""
    rows = [("#", "layer", "output shape", "params")]
    rows += [(str(i), type(layer).__name__, str(tuple(layer.output.shape)), f"{layer.count_params():,}")
             for i, layer in enumerate(model.layers, start=1)]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [f"  {n:>{widths[0]}}  {a:<{widths[1]}}  {b:<{widths[2]}}  {c:>{widths[3]}}" for n, a, b, c in rows]
    lines.insert(1, "  " + "-" * (sum(widths) + 6))
    return lines


def describe(cfg: TrainConfig) -> str:
    """Text describing every member's network (built by models.make_model) and the ensemble's total."""
    from .models import make_model

    archs = member_architectures(cfg)
    lines = [f"config {cfg.name}: {cfg.members} member(s), input 28x28x1, 10-way softmax", ""]
    total = 0
    for name in dict.fromkeys(archs):
        model = make_model(name)
        members = [i for i, a in enumerate(archs) if a == name]
        params, trainable = model.count_params(), _count(model.trainable_weights)
        total += params * len(members)
        lines.append(f"{name} (member{'s' if len(members) > 1 else ''} {', '.join(map(str, members))})")
        lines += layer_table(model)
        lines += [f"  params: {params:,} (trainable {trainable:,}, non-trainable {params - trainable:,})", ""]
    counts = ", ".join(f"{archs.count(n)} x {n}" for n in dict.fromkeys(archs))
    lines.append(f"total: {total:,} params in {cfg.members} member(s) ({counts})")
    return "\n".join(lines)
