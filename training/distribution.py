"""Where the training step runs: on one device, or as replicas under tf.distribute.

    --distribute none          one device: the step as it always was
    --distribute mirrored      tf.distribute.MirroredStrategy over the visible GPUs
                               (--devices N: the first N GPUs, or N logical CPU devices)
    --distribute multi_worker  tf.distribute.MultiWorkerMirroredStrategy over the
                               cluster in the TF_CONFIG environment variable

The choice is made once, where the Trainer is built. The trainer makes its models,
optimisers and variables under `scope()` and compiles its step with `compile()`;
the step's code is the same for every choice. Replicas split the global batch, and
ops.py keeps the mathematics that of one device (batch statistics summed across
replicas, losses as shares of the global batch's loss).
"""
import contextlib
import functools
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

import numpy as np
import tensorflow as tf

KINDS = ('none', 'mirrored', 'multi_worker')


class DistributionError(Exception):
    """A setup that cannot run (no TF_CONFIG, too few devices): a usage error."""


class SingleDevice:
    """--distribute none: no tf.distribute at all, so nothing changes on one device."""
    kind = 'none'
    replicas = 1
    workers = 1
    is_chief = True

    def scope(self):
        return contextlib.nullcontext()

    def random_generator(self, seed):
        return tf.random.Generator.from_seed(seed)

    def compile(self, step):
        return tf.function(step, autograph=False)

    def repeat(self, count, update):
        """`count` calls of one traced function: traced and optimised once, which takes a
        third off the first call of a replaying step. Three uninterrupted `--deterministic`
        runs of one seed end bit-identical (rehearsal, DGR; JTR twice), now that they run
        one op at a time; before that setting, rehearsal runs of this form disagreed."""
        return called(count, update)

    def record(self):
        """What config.json says of where the run trains."""
        return {'distribute': self.kind, 'replicas': self.replicas, 'workers': self.workers}


class Replicated(SingleDevice):
    """A tf.distribute strategy: the step runs on every replica, its outputs are summed
    (each replica returns its share of the global batch's values)."""

    def __init__(self, kind, strategy):
        self.kind, self.strategy = kind, strategy
        self.replicas = strategy.num_replicas_in_sync
        resolver = getattr(strategy, 'cluster_resolver', None)
        cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
        self.workers = max(1, len(cluster.get('worker', [])) + len(cluster.get('chief', [])))
        self.is_chief = resolver is None or not cluster or is_chief_task(cluster, resolver.task_type, resolver.task_id)

    def scope(self):
        return self.strategy.scope()

    def random_generator(self, seed):
        """One random stream, copied on every replica: each replica draws the global batch
        and keeps its own part (ops.replica_part), so that the batches are those of one
        device with the same seed and no two replicas train on the same samples.
        Call outside scope(): a Generator made in a strategy scope gives each replica
        a stream of its own."""
        seeded = tf.random.Generator.from_seed(seed)
        with self.strategy.scope():
            state = tf.Variable(seeded.state, trainable=False,
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        return tf.random.Generator(state=state, alg=seeded.algorithm)

    def compile(self, step):
        def replicated(*args):
            shares = self.strategy.run(step, args=args)
            return tf.nest.map_structure(
                lambda share: self.strategy.reduce(tf.distribute.ReduceOp.SUM, share, axis=None), shares)
        return tf.function(replicated, autograph=False)

    def repeat(self, count, update):
        """Written out, the form the tf.distribute comparison checks: the strategy cannot merge
        all-reduces inside a graph loop, and calls of a traced function are not tried here."""
        return written_out(count, update)


def written_out(count, update):
    """update() `count` times in Python: `count` copies of its ops in the graph."""
    for _ in range(count - 1):
        update()
    return update()


def called(count, update):
    """update() `count` times as calls of one tf.function traced once."""
    traced = tf.function(update, autograph=False)
    for _ in range(count - 1):
        traced()
    return traced()


def is_chief_task(cluster, task_type, task_id):
    """TensorFlow's convention: the 'chief' task, or worker 0 when there is none."""
    if 'chief' in cluster:
        return task_type == 'chief'
    return task_type == 'worker' and int(task_id) == 0


def chief_process(kind, environ=os.environ):
    """Whether this process writes the run's files: the only process, or the chief of
    the TF_CONFIG cluster (read before TensorFlow starts; validate() checked it)."""
    if kind != 'multi_worker':
        return True
    config = json.loads(environ['TF_CONFIG'])
    return is_chief_task(config['cluster'], config['task']['type'], config['task']['index'])


def weights_fingerprint(variables):
    """A short digest of the values, for checking that workers hold the same weights."""
    digest = hashlib.sha256()
    for variable in variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()[:16]


# --- choosing ------------------------------------------------------------------------------

def validate(kind, devices, environ=os.environ):
    """The problem with a --distribute/--devices setup in words, or None. Runs before
    anything is written; initialises no TensorFlow device."""
    if devices is not None and kind != 'mirrored':
        return '--devices needs --distribute mirrored (multi_worker uses each machine\'s visible GPUs)'
    if kind == 'mirrored' and devices is not None:
        gpus = len(tf.config.list_physical_devices('GPU'))
        if gpus and devices > gpus:
            return f'--devices {devices}: only {gpus} GPU{"s" if gpus > 1 else ""} visible'
    if kind == 'multi_worker':
        return tf_config_problem(environ.get('TF_CONFIG'))
    return None


def tf_config_problem(text):
    """What is wrong with a TF_CONFIG value, or None."""
    if text is None or not text.strip():
        return ('--distribute multi_worker needs the TF_CONFIG environment variable: the cluster\'s '
                'workers and this process\'s task (see docs/distributed.md)')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        return f'TF_CONFIG is not valid JSON ({error})'
    cluster = config.get('cluster') if isinstance(config, dict) else None
    task = config.get('task') if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(cluster.get('worker', []), list) or not any(
            isinstance(addresses, list) and addresses for addresses in cluster.values()):
        return 'TF_CONFIG needs "cluster": {"worker": ["host:port", ...]}'
    if not isinstance(task, dict) or task.get('type') not in cluster:
        return f'TF_CONFIG needs "task": {{"type": one of {sorted(cluster)}, "index": N}}'
    index = task.get('index')
    if not isinstance(index, int) or not 0 <= index < len(cluster[task['type']]):
        return (f'TF_CONFIG task index {index!r} is not one of the {len(cluster[task["type"]])} '
                f'{task["type"]} addresses')
    for address in (a for addresses in cluster.values() if isinstance(addresses, list) for a in addresses):
        if port_of(address) is None:
            return f'TF_CONFIG address {address!r} is not host:port with a port from 1 to 65535'
    return None


def port_of(address):
    """The port of 'host:port', or None."""
    port = str(address).rpartition(':')[2]
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else None


# --- multi_worker start-up -----------------------------------------------------------------------

CLUSTER_TIMEOUT_SECONDS = 300


def cluster_addresses(environ=os.environ):
    """(this task's address, the other tasks' addresses) in TF_CONFIG."""
    config = json.loads(environ['TF_CONFIG'])
    own = (config['task']['type'], config['task']['index'])
    addresses = {(job, index): address for job, listed in config['cluster'].items()
                 for index, address in enumerate(listed)}
    return addresses.pop(own), list(addresses.values())


def answers(address):
    host, _, port = address.rpartition(':')
    try:
        with socket.create_connection((host.strip('[]'), int(port)), timeout=1):
            return True
    except OSError:
        return False


def drain(listener):
    """Accept and reset the peers' probes, so that they never fill the queue and leave no
    connection behind on our port for TensorFlow's server to trip over."""
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))  # close with a reset
        connection.close()


def wait_for_peers(timeout, environ=os.environ, poll_seconds=0.5):
    """Before TensorFlow starts its server: holds this task's port (so that a port in use is
    found now) until every other task in TF_CONFIG holds its own, or `timeout` seconds pass.
    Plain sockets, in Python: Ctrl-C and SIGTERM stop it, which TensorFlow's wait ignores."""
    own, others = cluster_addresses(environ)
    listener = socket.socket()
    try:
        listener.bind(('', port_of(own)))
    except OSError as error:
        raise DistributionError(f'port {port_of(own)} of this task ({own} in TF_CONFIG) cannot be used '
                                f'({error.strerror}): stop what holds it, or give the task another port') from None
    with listener:
        listener.listen()
        listener.setblocking(False)
        if others:
            print(f'waiting up to {timeout:g} s for the other tasks of TF_CONFIG: {", ".join(others)}',
                  file=sys.stderr, flush=True)
        deadline = time.monotonic() + timeout
        while True:
            drain(listener)
            others = [address for address in others if not answers(address)]
            if not others:
                return
            if time.monotonic() > deadline:
                raise DistributionError(cluster_timeout_message(others, timeout))
            time.sleep(poll_seconds)


def cluster_timeout_message(missing, timeout):
    return (f'--distribute multi_worker: {", ".join(missing)} did not answer within {timeout:g} s '
            '(--cluster_timeout): start the same command on every machine of TF_CONFIG, each with its own '
            'task. Nothing was written')


def start_cluster(kind, devices, timeout):
    """multi_worker: every task of TF_CONFIG is up, and TensorFlow's cluster with it, within
    `timeout` seconds, before the run writes anything; DistributionError otherwise. Once every
    peer answers TensorFlow connects at once; should one vanish in between, a watchdog ends
    the process after `timeout` (TensorFlow's own wait has no limit)."""
    if kind != 'multi_worker':
        return
    wait_for_peers(timeout)
    own_sigterm = signal.getsignal(signal.SIGTERM)
    watchdog = threading.Timer(timeout, give_up, args=(timeout,))
    watchdog.daemon = True
    watchdog.start()
    try:
        tf_strategy(kind, devices)
    except tf.errors.OpError as error:
        raise DistributionError(f'--distribute multi_worker: TensorFlow could not start the cluster '
                                f'({error.message})') from None
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGTERM, own_sigterm)  # TensorFlow's preemption notice swallows SIGTERM


def lost_peer(error):
    """Whether a TensorFlow error means another task of the cluster stopped or cannot be reached."""
    return isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                              tf.errors.DeadlineExceededError))


def give_up(timeout):
    """The watchdog: nothing is written yet, so the process may end at once."""
    print(f'error: --distribute multi_worker: every task answered, but TensorFlow\'s cluster did not start '
          f'within {timeout:g} s (--cluster_timeout); did a task stop? Nothing was written',
          file=sys.stderr, flush=True)
    os._exit(2)


def make_distribution(kind, devices=None):
    if kind == 'none':
        return SingleDevice()
    return Replicated(kind, tf_strategy(kind, devices))


@functools.lru_cache(maxsize=None)
def tf_strategy(kind, devices):
    """One tf.distribute strategy per setup and process: a second one would number its
    collective operations from the start again, and TensorFlow would take them for the
    first one's (a shape mismatch), as when tests build several trainers."""
    if kind == 'mirrored':
        return tf.distribute.MirroredStrategy(mirrored_devices(devices))
    if kind == 'multi_worker':
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        configure_heartbeat(resolver.cluster_spec(), HEARTBEAT_TIMEOUT_SECONDS)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    raise ValueError(f'--distribute {kind!r}: not one of {KINDS}')


HEARTBEAT_TIMEOUT_SECONDS = 60


def configure_heartbeat(cluster, seconds):
    """The coordination service as MultiWorkerMirroredStrategy would set it up, but with a
    longer heartbeat timeout: its default of 10 s stopped jobs on a busy CPU while a
    worker traced its step. A lost worker is then noticed after `seconds`.
    (TensorFlow has no public switch for this.)"""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ('chief', 'worker') if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type='standalone', service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=seconds * 1000)


def mirrored_devices(count):
    """The first `count` GPUs (all by default); without a GPU, `count` logical CPU
    devices, which is how the tests run replicas on a CPU."""
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        return [f'/gpu:{index}' for index in range(count or len(gpus))]
    if count and count > 1:
        cpu = tf.config.list_physical_devices('CPU')[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError as error:  # TensorFlow's devices were set up already in this process
            if len(tf.config.list_logical_devices('CPU')) < count:
                raise DistributionError(f'--devices {count}: TensorFlow already set up its CPU devices '
                                        f'in this process ({error})') from error
    return [f'/cpu:{index}' for index in range(count or 1)]
