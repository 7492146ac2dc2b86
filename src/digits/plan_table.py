"""Written by `make bench ONLY=table` on 2026-12-04 (benchmarks/accuracy_table.py): do not edit.

Test accuracy of one member by net and epochs (Kaggle layout, scored on the 28,000 answers); what
averaging two members adds, as PAIR_GAIN x (one member's error rate) ** PAIR_GAIN_POWER (fitted over
the points: weaker members gain more); and how much faster members train at once, per precision.
"""

TRAIN_ROWS = 38640
ACCURACY = {'kaggle-rmsprop': [(4, 0.98607), (12, 0.99264), (24, 0.99377)],
 'lite': [(4, 0.99105), (12, 0.99395), (24, 0.99507)],
 'strong': [(4, 0.99205), (12, 0.99477), (24, 0.99568)]}
PAIR_GAIN, PAIR_GAIN_POWER = 0.8404, 1.309
# per compute precision and net: total training speed of one single-thread member per core over one
# member on every core (a net not timed takes the least of the others)
PARALLEL_SPEEDUP = {'float32': {'kaggle-rmsprop': 1.693, 'lite': 1.371, 'strong': 1.432},
 'mixed_bfloat16': {'lite': 1.831, 'strong': 1.329}}
