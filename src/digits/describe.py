"""`digits describe`: each member's architecture (layers, output shapes, parameters) and the total."""

import numpy as np

from .config import TrainConfig, describe_schedule


def member_architectures(cfg: TrainConfig) -> list[str]:
    """The architecture of each member: the config's list cycled over its members."""
    return [cfg.architectures[i % len(cfg.architectures)] for i in range(cfg.members)]


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def layer_table(model) -> list[str]:
    """Keras's own `model.summary()` table (layers, output shapes, parameters), as lines."""
    lines = []  # 78 columns: rich cuts a wider table when output is not a terminal
    model.summary(print_fn=lambda text, **_: lines.extend(text.splitlines()), line_length=78)
    return lines


def describe(cfg: TrainConfig) -> str:
    """Text describing every member's network (built by models.make_model) and the ensemble's total."""
    from .budget import candidates, without_budget
    from .models import make_model

    if cfg.architectures == ("auto",) and cfg.budget:  # the budget planner picks one of these nets
        archs = candidates(cfg)
        return "\n".join([f"config {cfg.name}: budget {cfg.budget}; the planner chooses the net, members and epochs "
                          f"on the machine, from: {', '.join(archs)}", ""] + _net_tables(archs, cfg, make_model)[0])
    cfg = without_budget(cfg)
    archs = member_architectures(cfg)
    lines = [f"config {cfg.name}: {cfg.members} member(s), input 28x28x1, 10-way softmax",
             f"schedule: {describe_schedule(cfg)}" + (f"; budget {cfg.budget} (members and epochs planned on the "
                                                      "machine)" if cfg.budget else ""), ""]
    tables, total = _net_tables(archs, cfg, make_model)
    lines += tables
    counts = ", ".join(f"{archs.count(n)} x {n}" for n in dict.fromkeys(archs))
    lines.append(f"total: {total:,} params in {cfg.members} member(s) ({counts})")
    return "\n".join(lines)


def _net_tables(archs: list[str], cfg: TrainConfig, make_model) -> tuple[list[str], int]:
    """Each distinct net's layer table and parameter count (with the members it serves); the total parameters."""
    lines, total = [], 0
    for name in dict.fromkeys(archs):
        model = make_model(name, l2=cfg.l2, dropout=cfg.dropout)
        members = [i for i, a in enumerate(archs) if a == name]
        params, trainable = model.count_params(), _count(model.trainable_weights)
        total += params * len(members)
        lines.append(f"{name} (member{'s' if len(members) > 1 else ''} {', '.join(map(str, members))})")
        lines += layer_table(model)
        lines += [f"  params: {params:,} (trainable {trainable:,}, non-trainable {params - trainable:,})", ""]
    return lines, total
