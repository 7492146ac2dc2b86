"""What an epoch is: the rows dealt out one permutation per pass, cut into epochs of `epoch_rows` images."""

import numpy as np

from digits.config import TrainConfig, epoch_images


def _batches(cfg: TrainConfig, rows: int, first_epoch: int, epochs: int) -> list[np.ndarray]:
    from digits.member import make_dataset

    images = np.zeros((rows, 28, 28, 1), np.float32)
    labels = np.arange(rows, dtype=np.int32)  # each label names its row
    return [batch.numpy() for _, batch in make_dataset(images, labels, cfg, 42, first_epoch, epochs)]


def test_shorter_epochs_deal_each_row_once_per_pass_and_resume_where_they_left_off():
    cfg = TrainConfig(batch_size=10, steps_per_execution=1, epoch_rows=30, rotation_degrees=0, zoom=0, shift=0)
    assert epoch_images(cfg, 100) == 30
    stream = np.concatenate(_batches(cfg, 100, 0, 10))  # 10 epochs of 30 images: 3 passes over 100 rows
    assert len(stream) == 300
    for one_pass in range(3):
        assert sorted(stream[100 * one_pass: 100 * (one_pass + 1)]) == list(range(100))
    assert not np.array_equal(stream[:100], stream[100:200])  # each pass its own order
    resumed = np.concatenate(_batches(cfg, 100, 4, 10))  # after epoch 4, mid-pass
    np.testing.assert_array_equal(resumed, stream[120:])


def test_a_whole_pass_epoch_fills_its_last_call_from_the_next_pass():
    cfg = TrainConfig(batch_size=10, steps_per_execution=4, rotation_degrees=0, zoom=0, shift=0)
    assert epoch_images(cfg, 100) == 120  # 10 batches, rounded up to 3 calls of 4
    stream = np.concatenate(_batches(cfg, 100, 0, 2))
    assert sorted(stream[:100]) == list(range(100)) and sorted(stream[100:200]) == list(range(100))


def test_the_training_stream_runs_without_the_autotuning_model():
    """Its thread made deleting the iterator at the end of fit wait up to a minute."""
    from digits.member import make_dataset

    cfg = TrainConfig(batch_size=10, steps_per_execution=1)
    dataset = make_dataset(np.zeros((20, 28, 28, 1), np.float32), np.zeros(20, np.int32), cfg, 42, 0, 1)
    assert dataset.options().autotune.enabled is False
