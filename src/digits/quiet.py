"""Import TensorFlow without its C++ start-up lines (printed to fd 2 before any log level applies), oneDNN on."""

import os
import sys
import tempfile


def import_tensorflow():
    """TensorFlow, imported with fd 2 parked in a temporary file; the lines are shown only if the import fails."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on an AVX2-only
    # Zen 3 they train kaggle-rmsprop 2.5x and lite and strong 1.5x faster (docs/PERFORMANCE.md). "0" still wins.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow
