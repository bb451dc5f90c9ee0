"""A run's checkpoints, and its generator as evaluation and figures restore it.

RunGenerator holds the generator, the networks its method samples with (DGR's solver),
their end-of-task checkpoints, generate() and the method's samplers and grids. --test
and Figure 4 build only this: no critic, optimiser or train step. The Trainer contains
one and adds what training needs around it.
"""
import glob
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

import model
import run_folder
import utils
from training.sampling import ClassBatchSampler, MixedBatchSampler, trains_mixed_batches

# The checkpoint names of a method's objects: 'strategy_' is what every run so far wrote.
METHOD_STATE_PREFIX = 'strategy_'


def with_every_weight(objects):
    """Checkpoint items, each Keras model's weights added by list.

    A Keras 3 model shows tf.train.Checkpoint only the layers it holds as attributes,
    not those in lists (our norms and convolutions). A trained network's list-held
    weights are still saved through its optimiser; a frozen copy (the old generator,
    DGR's old solver) has none, and would come back from a checkpoint half re-initialised.
    """
    items = dict(objects)
    for name, value in objects.items():
        if isinstance(value, keras.Model):
            items[f'{name}_weights'] = list(value.weights)
    return items


def method_state(objects):
    """{name: trackable} of a method, under the names its checkpoints use."""
    return {f'{METHOD_STATE_PREFIX}{name}': value for name, value in objects.items()}


class RunCheckpoints:
    """Two managers over one tf.train.Checkpoint: every task's end is kept,
    the in-task checkpoint keeps only the latest (which is what --resume reads)."""

    def __init__(self, result_path, checkpoint):
        self.checkpoint, self.result_path = checkpoint, result_path
        directory = os.path.join(result_path, 'checkpoints')
        self.latest = tf.train.CheckpointManager(checkpoint, os.path.join(directory, 'latest'), max_to_keep=1)
        self.task_directory = os.path.join(directory, 'tasks')

    def save_latest(self):
        with utils.writing(self.latest.directory):
            self.latest.save()

    def save_task_end(self, task_number):
        with utils.writing(self.task_path(task_number)):
            self.checkpoint.write(self.task_path(task_number))

    def task_path(self, task_number):
        return run_folder.task_checkpoint_path(self.result_path, task_number)

    def restore_latest(self):
        """Restores the latest checkpoint; False when there is none."""
        if self.latest.latest_checkpoint is None:
            return False
        self._restore(self.latest.latest_checkpoint, self.checkpoint.restore)
        return True

    def restore_task_end(self, task_number):
        path = self.task_path(task_number)
        if not os.path.exists(path + '.index'):
            return False
        self._restore(path, self.checkpoint.read)
        return True

    def _restore(self, path, read):
        try:
            read(path).assert_existing_objects_matched().expect_partial()
        except Exception as error:  # TensorFlow reports damaged files in several error types
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise utils.UsageError(f'checkpoint {path} is damaged or incomplete ({reason}); --resume continues '
                                   'from an earlier checkpoint once it is moved out of the way') from error

    def task_ends(self):
        """Task numbers with an end-of-task checkpoint, ascending."""
        pattern = os.path.join(self.task_directory, 'task_*.index')
        numbers = [os.path.basename(path)[len('task_'):-len('.index')] for path in glob.glob(pattern)]
        return sorted(int(n) for n in numbers if n.isdigit())

    def remove_unfinished_writes(self):
        """Folders a killed checkpoint write left behind (TensorFlow's *_temp*)."""
        removed = []
        for directory in (self.latest.directory, self.task_directory):
            for path in glob.glob(os.path.join(directory, '*_temp*')):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
        return removed


def latest_checkpoint(result_path):
    """The resumable checkpoint --resume would continue from, or None."""
    return tf.train.latest_checkpoint(os.path.join(result_path, 'checkpoints', 'latest'))


def tasks_trained(result_path):
    """How many tasks the run had finished at its resumable checkpoint (0 without one)."""
    latest = latest_checkpoint(result_path)
    try:
        return int(tf.train.load_checkpoint(latest).get_tensor('task_index/.ATTRIBUTES/VARIABLE_VALUE'))
    except Exception:  # no checkpoint, or a damaged one: --resume reports that itself
        return 0


def network_settings(architecture, data):
    """The build arguments of a run's networks."""
    return dict(architecture=architecture, num_classes=data.num_classes, image_shape=data.image_shape)


def non_finite(variables):
    return not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables if tf.as_dtype(v.dtype).is_floating)


class RunGenerator:
    """A run's generator and its method's sampling networks, restorable from the run's
    end-of-task checkpoints; images, samplers and grids as --test draws them."""

    def __init__(self, generator, method, sampling_networks, config, data):
        self.generator, self.method, self.sampling_networks = generator, method, dict(sampling_networks)
        self.config, self.data = config, data
        self.generate = tf.function(generator.call)

    @classmethod
    def build(cls, config, data, method):
        """A fresh generator and sampling networks for a run, to restore from its checkpoints."""
        settings = network_settings(config.settings.architecture, data)
        with model.precision_policy(config.precision):
            generator = model.build_generator(**settings, conditional=method.conditional)
        return cls(generator, method, method.build_sampling_networks(settings), config, data)

    def checkpoint_items(self):
        """What the run's checkpoints hold of this object, under the names they use."""
        return {'generator': self.generator, **method_state(self.sampling_networks)}

    def restore_task_end(self, task_number):
        """The generator (and sampling networks) after `task_number`; False when the run has no
        checkpoint of that task's end. UsageError when the checkpoint is damaged."""
        checkpoint = tf.train.Checkpoint(**with_every_weight(self.checkpoint_items()))
        return RunCheckpoints(self.config.result_path, checkpoint).restore_task_end(task_number)

    def tasks_trained(self):
        """How many tasks the run had finished at its resumable checkpoint."""
        return tasks_trained(self.config.result_path)

    def non_finite_networks(self):
        """Names of the networks holding a NaN or infinite weight."""
        return [name for name, network in self.checkpoint_items().items() if non_finite(network.weights)]

    def sampler(self, task):
        """The method's generate(class_id, count) after `task`."""
        return self.method.sampler(self, task)

    def default_sampler(self, task):
        """A sequential task's batches each held one class (the current one, or one
        replayed class); joint training mixed them."""
        if trains_mixed_batches(task):
            return MixedBatchSampler(self.generate, task.seen_classes, self.config.seed)
        return ClassBatchSampler(self.generate, self.config.seed)

    def class_grid_images(self, task, fixed_noise):
        """{class: images} from the fixed noise, in the task's batch make-up."""
        classes = task.seen_classes
        if trains_mixed_batches(task):
            labels = np.repeat(np.asarray(classes, np.int32), len(fixed_noise))
            images = self.generate(np.tile(fixed_noise, (len(classes), 1)), labels).numpy()
            return dict(zip(classes, np.split(images, len(classes))))
        return {c: self.generate(fixed_noise, np.full(len(fixed_noise), c, np.int32)).numpy() for c in classes}

    def save_class_grids(self, task, fixed_noise, path_of):
        for class_id, images in self.method.grid_images(self, task, fixed_noise).items():
            utils.save_grid(utils.to_uint8(images), os.path.join(self.config.result_path, path_of(class_id)))
