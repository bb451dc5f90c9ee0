"""bench.py: the analytic FLOP count, and a --quick run writing well-formed results."""
import json

import pytest
import tensorflow as tf

import bench
from training import methods
from data import load_dataset


def test_analytic_count_of_the_mnist_dcgan_pair():
    generator, critic = bench.dcgan_macs((32, 32, 1), 10)
    assert generator == {'dense': 262144, 'tconv1': 3276800, 'tconv2': 3276800, 'tconv3': 204800}
    assert critic == {'conv1': 204800, 'conv2': 3276800, 'conv3': 3276800, 'heads': 22528}
    # 5 critic steps (G forward, critic forward + backward on 128, penalty = 4 forwards on 64)
    # and one generator step, worked out by hand from the per-image counts above.
    assert bench.analytic_gflop_per_iteration('sft', (32, 32, 1), 10, 0) * 1e9 == 52027195392
    sft = bench.analytic_gflop_per_iteration('sft', (32, 32, 1), 10, 5)
    ra = bench.analytic_gflop_per_iteration('ra', (32, 32, 1), 10, 5)
    jtr = bench.analytic_gflop_per_iteration('jtr', (32, 32, 1), 10, 5)
    g = 2 * 7020544  # generator FLOPs per image
    assert round((ra - sft) * 1e9) == 60 * (4 * g - 2 * 262144)  # old G + new G forward, new G backward
    d = 2 * 6780928  # critic FLOPs per image
    # Per critic step: old G + new G forward, critic forward and weight backward on both.
    # Generator step: new G forward and backward, critic forward and input backward; no old G.
    assert round((jtr - sft) * 1e9) == (5 * 60 * (2 * g + 2 * (3 * d - 2 * 204800))
                                         + 60 * (3 * g - 2 * 262144 + 2 * d))
    # DGR, per critic step: old G + new G forward on a full batch, critic forward and weight
    # backward on both, and the replay pair's penalty (4 critic forwards).
    dgr = bench.analytic_gflop_per_iteration('dgr', (32, 32, 1), 10, 5)
    assert round((dgr - sft) * 1e9) == 5 * 64 * (2 * g + 2 * (3 * d - 2 * 204800) + 4 * d)
    assert bench.analytic_gflop_per_iteration('ewc', (32, 32, 1), 10, 5) == sft


def test_timed_step_parts_compute_what_they_are_named_for(tmp_path):
    data = load_dataset('mnist_5k', None)
    models = bench.make_trainer('sft', data, 'float32', str(tmp_path)).models
    calls = bench.step_part_calls(models, data.image_shape, data.num_classes)
    assert calls['generator_forward'][0]().shape == (64, 32, 32, 1)
    # Every kernel under the critic's score gets a gradient; the class head (the last
    # two variables) is not under it.
    kernels = [i for i, v in enumerate(models.critic.trainable_variables[:-2]) if v.path.endswith('kernel')]
    assert len(kernels) == 4
    for name in ('critic_forward_backward', 'gradient_penalty'):
        gradients = calls[name][0]()
        assert all(gradients[i] is not None and float(tf.reduce_max(tf.abs(gradients[i]))) > 0
                   for i in kernels), name


@pytest.mark.slow
def test_quick_run_writes_well_formed_results(tmp_path):
    out = tmp_path / 'bench.json'
    # sft is added: the reference of the ratios; every method is timed by default (below)
    bench.run(bench.parse_args(['--quick', '--iterations', '1', '--precisions', 'float32', '--out', str(out),
                                '--methods', 'ra']))
    results = json.loads(out.read_text())
    assert set(results) >= {'machine', 'matmul_gflops', 'methods', 'memory_mb', 'eval_images_per_s', 'precision'}
    assert list(results['methods']) == ['sft', 'ra']
    for method, measured in results['methods'].items():
        assert measured['gen_iters_per_s'] > 0 and measured['traces'] == 1
        assert measured['images_per_s'] == measured['gen_iters_per_s'] * 64 * 6
        assert abs(measured['ratio_to_matmul'] * results['matmul_gflops'] - measured['gflops']) < 1e-6
    sft, ra = results['methods']['sft'], results['methods']['ra']
    assert 1.0 < sft['profiler_gflop_per_iter'] / sft['gflop_per_iter'] < 1.2  # the profiler sees the whole step
    # RA's replay batch has a size that is a tensor at tracing; the profiler counts only known shapes.
    assert ra['profiler_gflop_per_iter'] == pytest.approx(sft['profiler_gflop_per_iter'], rel=1e-3)
    assert results['methods']['sft']['gflop_per_iter'] == 52027195392 / 1e9
    assert results['precision']['float32'] == results['methods']
    # --quick stops its memory run after task 3, not 10
    assert set(results['memory_mb']) == {'after_task_1', 'after_task_3'}
    assert all(megabytes > 100 for megabytes in results['memory_mb'].values())
    assert results['eval_images_per_s'] > 0 and results['machine']['cores'] >= 1
    assert results['flops_vs_sft']['sft'] == 1.0 and results['flops_vs_sft']['ra'] > 1.0
    assert set(results['step_parts']) == {'generator_forward', 'critic_forward_backward', 'gradient_penalty'}
    for part in results['step_parts'].values():
        assert part['ms'] > 0
        assert abs(part['ratio_to_matmul'] * results['matmul_gflops'] - part['gflops']) < 1e-6


def test_every_method_of_the_registry_is_timed_by_default():
    assert bench.parse_args([]).methods == list(methods.METHODS)
    assert bench.parse_args(['--methods', 'dgr']).methods == ['dgr']
