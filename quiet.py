"""TensorFlow's start-up lines on a machine without a GPU (a red 'failed call to
cuInit' among them) read like failures to a new user. TensorFlow 2.21 writes them
through absl before its log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide
them: we import TensorFlow and list its devices with the process's stderr
captured, then pass on every line that is not one of those. A user who sets
TF_CPP_MIN_LOG_LEVEL sees everything. Imported before anything loads TensorFlow,
which makes it also the place for the one setting TensorFlow reads only as it loads."""
import os
import re
import sys
import tempfile

START_UP_NOISE = re.compile(
    r'All log messages before absl::InitializeLog|oneDNN custom operations are on|cudart_stub|'
    r'cuda_platform|cuInit|cuda_executor|cpu_feature_guard|rebuild TensorFlow with the appropriate compiler flags|'
    r'Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered')


def import_tensorflow_quietly():
    if 'TF_CPP_MIN_LOG_LEVEL' in os.environ:
        import tensorflow  # noqa: F401
        return
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '1'
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # device discovery logs now, while captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode(errors='replace').splitlines():
            if line.strip() and not START_UP_NOISE.search(line):
                print(line, file=sys.stderr)


def deterministic_requested(argv):
    """Whether a command line's flags ask for --deterministic, decided as its parser decides:
    only the whole word turns it on, since every parser here refuses abbreviations and a
    switch takes no '=value' (argv[0] is the script)."""
    return '--deterministic' in argv[1:]


def keep_deterministic_runs_exact(argv):
    """--deterministic promises bit-exact reruns, but op determinism does not reach oneDNN's
    CPU kernels, which may sum in thread order. The flag overrules TF_ENABLE_ONEDNN_OPTS=1
    in the environment: it cannot hold with it. Independent ops running side by side also
    broke it: in the methods whose critic sees replays (JTR, rehearsal, DGR), two runs drew
    apart in task 2 until ops ran one at a time, so the inter-op pool gets one thread. Each
    op still uses every core."""
    if deterministic_requested(argv):
        os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'
        os.environ['TF_NUM_INTEROP_THREADS'] = '1'


keep_deterministic_runs_exact(sys.argv)
import_tensorflow_quietly()
