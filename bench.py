"""Throughput of the real training step (the one main.py and joint.py run).

    python bench.py [--quick] [--out results/bench.json]

Times training.Trainer.train_step on mnist_5k at batch 64 for SFT, RA, JTR (at
task 6: five earlier classes replayed) and joint training, in each precision;
counts FLOPs per generator iteration analytically and with TensorFlow's
profiler; measures this machine's fp32 matmul rate in the same run and the
rate of each piece of a critic step alone; SFT's step under --distribute mirrored
on 2 devices next to one device (2 GPUs, or on a CPU 2 logical devices: the engine's
overhead);
peak memory after 1 and after 10 tasks; evaluation throughput.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import quiet  # noqa: F401  (before TensorFlow loads)
import tensorflow as tf

import model
import ops
import run_config
import runs
import utils
from data import group_by_class, load_dataset
from evaluation.classifier import build_classifier, predict_labels
from training import methods
from training.sampling import ClassBatchSampler
from training.trainer import BATCH_SIZE, CRITIC_STEPS

ROOT = os.path.dirname(os.path.abspath(__file__))
# Every method of the registry, SFT first, joint training last.
TIMED_METHODS = ('sft', *[cls.name for cls in methods.selectable()], methods.JointTraining.name)
REPLAY_TASK = 6  # sequential methods are timed where 5 earlier classes are replayed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument('--quick', action='store_true', help='a smoke check: fewer timed iterations, fewer tasks')
    parser.add_argument('--iterations', type=utils.positive_int, help='timed generator iterations per method')
    parser.add_argument('--precisions', nargs='+', default=list(model.PRECISIONS), choices=model.PRECISIONS)
    parser.add_argument('--methods', nargs='+', default=list(TIMED_METHODS), choices=TIMED_METHODS,
                        help='the methods to time (default: every method); sft, the reference of the ratios, '
                        'is always timed')
    parser.add_argument('--out', default=os.path.join('results', 'bench.json'))
    parser.add_argument('--distribution_child', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the machine's reference rate -----------------------------------------------------------

def time_call(function, repeats):
    """Best mean seconds per call over three rounds, after tracing."""
    function()
    best = float('inf')
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            outputs = function()
        [tensor.numpy() for tensor in tf.nest.flatten(outputs) if isinstance(tensor, tf.Tensor)]
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def matmul_gflops(size=2048, repeats=10):
    """fp32 rate of a large square tf.matmul."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    return 2 * size ** 3 / time_call(tf.function(lambda: tf.matmul(a, b)), repeats) / 1e9


# --- analytic FLOPs ----------------------------------------------------------------------------
# Multiply-adds of one forward pass per image, layer by layer, for the DCGAN pair:
#   dense: in * out;  conv: out_h * out_w * k * k * c_in * c_out;
#   transposed conv: in_h * in_w * k * k * c_in * c_out.
# A backward pass costs one forward per gradient it produces (weights, inputs).
# The gradient penalty costs 4 critic forwards: the forward on the interpolates,
# the input gradient, and differentiating that input gradient with respect to
# weights and to its upstream gradient (the activations are piecewise linear, so
# nothing flows back into the forward pass). Elementwise work (normalisation,
# activations, Adam) is left out; TensorFlow's profiler counts it, hence most of
# the difference between the two counts. It counts none of the replay terms: their
# batch size follows the task's class count, a tensor, and the profiler counts only
# ops whose shapes are known when the step is traced.

def dcgan_macs(image_shape, num_classes, width=32, z_dim=model.Z_DIM):
    channels = image_shape[-1]
    generator = {'dense': z_dim * 16 * 4 * width,
                 'tconv1': 4 * 4 * 25 * 4 * width * 2 * width,
                 'tconv2': 8 * 8 * 25 * 2 * width * width,
                 'tconv3': 16 * 16 * 25 * width * channels}
    critic = {'conv1': 16 * 16 * 25 * channels * width,
              'conv2': 8 * 8 * 25 * width * 2 * width,
              'conv3': 4 * 4 * 25 * 2 * width * 4 * width,
              'heads': 16 * 4 * width * (1 + num_classes)}
    return generator, critic


def analytic_gflop_per_iteration(method, image_shape, num_classes, earlier_classes):
    """The step's GFLOP by the count above; a method without a branch here is counted as SFT
    (its own terms left out)."""
    generator, critic = dcgan_macs(image_shape, num_classes)
    g, d = 2 * sum(generator.values()), 2 * sum(critic.values())  # FLOPs per image
    g_first, d_first = 2 * generator['dense'], 2 * critic['conv1']
    batch = BATCH_SIZE
    generator_backward = 2 * g - g_first      # no gradient into z
    critic_backward = 2 * d - d_first         # no gradient into training images
    critic_step = batch * g + 2 * batch * (d + critic_backward) + batch * 4 * d
    generator_step = batch * (g + generator_backward) + batch * 2 * d
    replayed = (batch // earlier_classes) * earlier_classes if earlier_classes else 0
    if method == 'ra':
        generator_step += replayed * (2 * g + generator_backward)
    if method == 'jtr':
        critic_step += replayed * (2 * g + 2 * (d + critic_backward))
        generator_step += replayed * (g + generator_backward + 2 * d)  # no old-G pass
    if method == 'dgr' and earlier_classes:  # a full unconditional replay batch, with its own penalty
        critic_step += batch * (2 * g + 2 * (d + critic_backward) + 4 * d)
    # EWC's penalty is elementwise (left out, as Adam is); its Fisher runs once per task
    return (CRITIC_STEPS * critic_step + generator_step) / 1e9


def profiler_gflop_per_iteration(trainer, spec):
    """FLOPs of the traced step graph as TensorFlow's profiler registers them."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    options = option_builder.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    graph = trainer.written_out_step_graph(spec)
    return model_analyzer.profile(graph, options=options).total_float_ops / 1e9


# --- timing the real step ----------------------------------------------------------------------

def method_flags(name):
    """main.py's flags selecting a method of the registry (none for SFT and joint training)."""
    flag = methods.METHODS[name].flag
    return [flag] if flag else []


def make_trainer(method, data, precision, result_path):
    config = run_config.default_config('mnist_5k', result_path, joint=method == methods.JointTraining.name,
                                       flags=method_flags(method), precision=precision)
    return runs.make_trainer(config, data)


def task_for(method, offsets, num_classes):
    if method == methods.JointTraining.name:
        return runs.joint_task(offsets, num_classes)
    return runs.sequential_tasks(offsets, REPLAY_TASK)[REPLAY_TASK - 1 if method != 'sft' else 0]


def time_steps(trainer, spec, iterations):
    """Seconds for `iterations` calls of the real step, after tracing and warming up."""
    for _ in range(3):
        trainer.train_step(spec)
    start = time.perf_counter()
    for _ in range(iterations):
        metrics = trainer.train_step(spec)
    float(metrics['critic/loss'])  # waits for the last step
    return time.perf_counter() - start


def time_method(method, data, precision, iterations, matmul_rate):
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    task = task_for(method, offsets, data.num_classes)
    with tempfile.TemporaryDirectory() as result_path:
        trainer = make_trainer(method, data, precision, result_path)
        spec = trainer.spec_tensors(task)
        seconds = time_steps(trainer, spec, iterations)
        profiled = profiler_gflop_per_iteration(trainer, spec)
        traces = trainer.compiled_step.experimental_get_tracing_count()
    rate = iterations / seconds
    analytic = analytic_gflop_per_iteration(method, data.image_shape, data.num_classes, task.spec.earlier_classes)
    return {'gen_iters_per_s': rate,
            'images_per_s': rate * BATCH_SIZE * (CRITIC_STEPS + 1),
            'gflop_per_iter': analytic, 'profiler_gflop_per_iter': profiled,
            'gflops': analytic * rate, 'ratio_to_matmul': analytic * rate / matmul_rate,
            'timed_iterations': iterations, 'traces': traces}


# --- where the critic step's time goes ------------------------------------------------------------

def step_parts(data, matmul_rate, repeats):
    """GFLOP/s of the pieces of one SFT critic step, each compiled alone: what a
    faster step would have to speed up (float32, batch 64, the paper's DCGAN pair)."""
    with tempfile.TemporaryDirectory() as result_path:
        models = make_trainer('sft', data, 'float32', result_path).models
    measured = {}
    for name, (call, flops) in step_part_calls(models, data.image_shape, data.num_classes).items():
        seconds = time_call(tf.function(call), repeats)
        measured[name] = {'ms': 1e3 * seconds, 'gflops': flops / seconds / 1e9,
                          'ratio_to_matmul': flops / seconds / 1e9 / matmul_rate}
    return measured


def step_part_calls(models, image_shape, num_classes):
    """{name: (call, analytic FLOPs)} of the critic step's pieces on batch 64."""
    generator_macs, critic_macs = dcgan_macs(image_shape, num_classes)
    g, d = 2 * sum(generator_macs.values()), 2 * sum(critic_macs.values())
    batch = BATCH_SIZE
    z, labels = tf.random.normal([batch, model.Z_DIM]), tf.zeros([batch], tf.int32)
    real, fake = tf.random.normal([batch, *image_shape]), tf.random.normal([batch, *image_shape])
    alpha = tf.random.uniform([batch, 1, 1, 1])

    def generator_forward():
        return models.generator(z, labels)

    # The losses are taken inside the tapes: outside, the tape records nothing and the
    # "backward" pass is empty.
    def critic_forward_backward():
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(models.critic(tf.concat([real, fake], 0))[0])
        return tape.gradient(total, models.critic.trainable_variables)

    def gradient_penalty():
        with tf.GradientTape() as tape:
            penalty = ops.gradient_penalty(lambda x: models.critic(x)[0], real, fake, alpha)
        return tape.gradient(penalty, models.critic.trainable_variables)

    return {'generator_forward': (generator_forward, batch * g),
            'critic_forward_backward': (critic_forward_backward, 2 * batch * (3 * d - 2 * critic_macs['conv1'])),
            'gradient_penalty': (gradient_penalty, batch * 4 * d)}


# --- the tf.distribute engine ------------------------------------------------------------------

def distribution_overhead(iterations):
    """SFT's step (task 1) on one device and mirrored over 2 devices, in one child process:
    logical devices must exist before TensorFlow starts. Without a GPU they are 2 logical
    devices of this CPU, sharing its cores: no speed-up is possible, the ratio is the
    engine's overhead. With GPUs, the first two: the scaling from one GPU to two."""
    command = [sys.executable, os.path.join(ROOT, 'bench.py'), '--distribution_child', '--iterations', str(iterations)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed: {done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def distribution_child(iterations):
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    data = load_dataset('mnist_5k', None)
    _, _, offsets = group_by_class(data.train_x, data.train_y, data.num_classes)
    task = runs.sequential_tasks(offsets, 1)[0]
    rates = {}
    for name, flags in (('none', []), ('mirrored_2', ['--distribute', 'mirrored', '--devices', '2'])):
        with tempfile.TemporaryDirectory() as result_path:
            trainer = runs.make_trainer(run_config.default_config('mnist_5k', result_path, flags=flags), data)
            seconds = time_steps(trainer, trainer.spec_tensors(task), iterations)
            devices = getattr(trainer.distribution, 'strategy', None)
            rates[name] = {'gen_iters_per_s': iterations / seconds,
                           'devices': list(devices.extended.worker_devices) if devices else ['default']}
    print(json.dumps(rates))


# --- memory over tasks and evaluation throughput ------------------------------------------------

def peak_memory_mb(num_tasks, iters):
    """Peak resident memory of a real main.py run (RA) of num_tasks short tasks."""
    with tempfile.TemporaryDirectory() as result_path:
        command = [sys.executable, os.path.join(ROOT, 'main.py'), '--dataset', 'mnist_5k', '--RA',
                   '--num_tasks', str(num_tasks), '--iters', str(iters), '--sample_every', str(iters),
                   '--ckpt_every', str(iters), '--result_path', os.path.join(result_path, 'run')]
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise RuntimeError(f'{" ".join(command)} failed: {child.stderr.read()[-2000:]}')
    return usage.ru_maxrss / 1024  # KiB on Linux


def eval_images_per_s(data, count):
    """Generated images per second through the generator and the evaluation classifier."""
    with tempfile.TemporaryDirectory() as result_path:
        trainer = make_trainer('sft', data, 'float32', result_path)
        classifier = build_classifier(data.image_shape, data.num_classes)
        sample = ClassBatchSampler(trainer.generate, seed=0)
        predict_labels(classifier, sample(0, BATCH_SIZE))  # warm up
        start = time.perf_counter()
        predict_labels(classifier, sample(1, count))
        return count / (time.perf_counter() - start)


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(),
            'tensorflow': tf.__version__, 'platform': platform.platform(),
            'gpus': [d.name for d in tf.config.list_physical_devices('GPU')]}


def run(args):
    iterations = args.iterations or (5 if args.quick else 40)
    data = load_dataset('mnist_5k', None)
    matmul_rate = matmul_gflops(repeats=5 if args.quick else 20)
    print(f'fp32 matmul: {matmul_rate:.1f} GFLOP/s', flush=True)
    results = {'machine': machine_description(), 'matmul_gflops': matmul_rate, 'methods': {}, 'precision': {}}
    for precision in args.precisions:
        for method in ['sft'] + [name for name in args.methods if name != 'sft']:
            measured = time_method(method, data, precision, iterations, matmul_rate)
            print(f"{precision:>15} {method:>5}: {measured['gen_iters_per_s']:.2f} it/s, "
                  f"{measured['gflops']:.1f} GFLOP/s ({100 * measured['ratio_to_matmul']:.0f}% of matmul), "
                  f"{measured['gflop_per_iter']:.1f} GFLOP/it analytic, "
                  f"{measured['profiler_gflop_per_iter']:.1f} by the profiler", flush=True)
            results['precision'].setdefault(precision, {})[method] = measured
    results['methods'] = results['precision'].get('float32') or next(iter(results['precision'].values()))
    sft = results['methods']['sft']['gen_iters_per_s']
    results['cost_vs_sft'] = {method: sft / measured['gen_iters_per_s'] for method, measured in results['methods'].items()}
    results['flops_vs_sft'] = {method: measured['gflop_per_iter'] / results['methods']['sft']['gflop_per_iter']
                               for method, measured in results['methods'].items()}
    results['step_parts'] = step_parts(data, matmul_rate, 5 if args.quick else 30)
    for name, part in results['step_parts'].items():
        print(f"{name:>24}: {part['ms']:.1f} ms, {part['gflops']:.0f} GFLOP/s "
              f"({100 * part['ratio_to_matmul']:.0f}% of matmul)", flush=True)
    results['distribution'] = distribution_overhead(iterations)
    one, mirrored = results['distribution']['none'], results['distribution']['mirrored_2']
    print(f"sft on one device: {one['gen_iters_per_s']:.2f} it/s; mirrored on {', '.join(mirrored['devices'])}: "
          f"{mirrored['gen_iters_per_s']:.2f} it/s", flush=True)
    memory_iters, last_task = (2, 3) if args.quick else (20, 10)
    results['memory_mb'] = {f'after_task_{tasks}': peak_memory_mb(tasks, memory_iters) for tasks in (1, last_task)}
    print('peak memory: ' + ', '.join(f'{megabytes:.0f} MB {when.replace("_", " ")}'
                                      for when, megabytes in results['memory_mb'].items()), flush=True)
    results['eval_images_per_s'] = eval_images_per_s(data, 640 if args.quick else 6400)
    print(f"evaluation: {results['eval_images_per_s']:.0f} generated images/s through G and the classifier")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=2)
    print(f'written to {args.out}')
    return results


if __name__ == '__main__':
    arguments = parse_args()
    if arguments.distribution_child:
        distribution_child(arguments.iterations or 40)
    else:
        run(arguments)
