"""Run ensemble members one after another, in parallel processes (joblib), or on a Dask cluster."""

import contextlib
import logging
import os
import time

from . import runs

log = logging.getLogger(__name__)


def run_members(cfg, inputs, train_index, holdout_index, run_dir, todo, jobs=1, cluster=None, deadline=None):
    """Train the members in `todo`; each writes its own folder, so they are independent.

    With a `deadline` (the run's budget) a member still to start when it has passed is left for a rerun,
    unless no member has finished yet: a run always ends with a submission.
    """
    arrays = (
        inputs.pixels[train_index],
        inputs.labels[train_index],
        inputs.pixels[holdout_index],
        inputs.labels[holdout_index],
        inputs.test_pixels,
    )
    if jobs <= 1 and not cluster:
        from .member import train_member

        rows = len(train_index)
        for position, index in enumerate(todo):
            if deadline is not None and time.time() >= deadline and (position or len(todo) < cfg.members):
                log.info(f"budget spent: members {todo[position:]} not trained (rerun the command to train them)")
                return
            after = (len(todo) - position - 1) * rows * cfg.epochs
            train_member(cfg, index, *arrays, runs.member_dir(run_dir, index), images_after=after,
                         deadline=deadline)
        return
    import joblib

    threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if not cluster else 0
    with _backend(cluster):
        joblib.Parallel(n_jobs=jobs if not cluster else len(todo))(
            joblib.delayed(_train_in_worker)(cfg, index, arrays, str(runs.member_dir(run_dir, index)), threads,
                                             deadline)
            for index in todo
        )


def _train_in_worker(cfg, index, arrays, member_dir, threads, deadline):
    """Entry point in a worker process: import TensorFlow there, not in the parent."""
    from . import logs
    from .member import train_member

    logs.to_stdout()
    return train_member(cfg, index, *arrays, member_dir, threads=threads, deadline=deadline)


@contextlib.contextmanager
def _backend(cluster):
    import joblib

    if not cluster:
        with joblib.parallel_backend("loky"):
            yield
        return
    from dask.distributed import Client

    with Client(cluster) as client, joblib.parallel_backend("dask", client=client):
        yield
