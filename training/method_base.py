"""The base of every continual-learning method: the hooks the trainer calls and the options
a method declares.

A method declares its flag, its label in tables, its options and the names of the loss
terms it adds; the trainer calls its hooks at named moments and never asks which method
it runs:

    build_sampling_networks(settings)   networks it draws images with beside the generator
                                        (DGR's solver): checkpointed with the generator and
                                        restored with it by evaluation
    build(trainer)                      what else it keeps for training; checkpointed
    begin_task / end_task               act at the start and the end of a task (eager)
    critic_terms(models, inputs, replay), generator_terms(models, inputs, replay)
                                        extra loss terms from task 2 on, traced into the
                                        compiled step; inputs are the step's draws
                                        (objective.StepInputs), replay a batch of the
                                        earlier classes (trainer.Replay)
    sampler(run_generator, task)        generate(class_id, count) -> uint8 images (evaluation)
    grid_images(run_generator, task, fixed_noise)   images per class for the sample grids
    task_metrics(run_generator, task)   numbers of its own for the task's results.json record

Adding a method means one module of training/ with its class, registered in
training/methods.py's METHODS, and its tests: the command lines, the reports and figures,
the benchmark and the protocol read the registry.
"""
from typing import NamedTuple

from utils import positive_float


class Option(NamedTuple):
    """A method's own flag (e.g. --RA_factor): by default a number, finite and above 0."""
    help: str
    default: object              # dataset_settings -> the value when the flag is not given
    type: object = positive_float
    in_older_runs: object = None  # for an option added later: the value runs saved before it had
    choices: tuple = None        # the values allowed, for a flag that names a choice


class Method:
    """Sequential fine tuning is the base: no extra terms, no extra state."""
    name = 'sft'                 # in config.json and results.json
    label = 'SFT'                # in tables and figures
    flag = None                  # the command-line switch selecting the method
    help = ''
    options = {}                 # flag name (also the keyword of __init__) -> Option
    critic_term_names = ()
    generator_term_names = ()
    conditional = True           # False: unconditional G and no auxiliary-classifier terms
    replay = 'per_class'         # replay batch: 'per_class' (labels of earlier classes) or 'unconditional'

    @classmethod
    def add_option_flags(cls, parser):
        """Flags of the method's own options (defaults None: 'not given')."""
        for name, option in cls.options.items():
            parser.add_argument(f'--{name}', type=option.type, choices=option.choices, help=option.help)

    @classmethod
    def older_run_options(cls):
        """Options absent from a run saved before they existed, and the values it used."""
        return {name: option.in_older_runs for name, option in cls.options.items()
                if option.in_older_runs is not None}

    @classmethod
    def options_from_args(cls, args, dataset_settings):
        """The method's options as a JSON-able dict, from parsed flags."""
        return {name: option.default(dataset_settings) if getattr(args, name) is None else getattr(args, name)
                for name, option in cls.options.items()}

    def build_sampling_networks(self, network_settings):
        """{name: network} that sampling needs beside the generator; restored with it."""
        return {}

    def build(self, trainer):
        """Make what the method needs for training; returns {name: trackable} to checkpoint."""
        return {}

    def begin_task(self, trainer, task):
        """After the trainer's own transition (old G := G, fresh Adam). Must be idempotent."""

    def end_task(self, trainer, task):
        """After the task's last iteration, before its checkpoint is written."""

    def critic_terms(self, models, inputs, replay):
        return {}

    def generator_terms(self, models, inputs, replay):
        return {}

    def sampler(self, run_generator, task):
        """generate(class_id, count) with the batch make-up the task trained on: batch-norm
        statistics depend on which classes share a batch."""
        return run_generator.default_sampler(task)

    def grid_images(self, run_generator, task, fixed_noise):
        """{class: float images in [-1, 1]} for one grid per seen class from the fixed noise."""
        return run_generator.class_grid_images(task, fixed_noise)

    def task_metrics(self, run_generator, task):
        """Numbers of the method's own for the task's results.json record (--test)."""
        return {}

    def check_terms(self, terms, names, side):
        """The contract: a method returns exactly the terms it declares."""
        if set(terms) != set(names):
            raise TypeError(f'{type(self).__name__}.{side}_terms returned {sorted(terms)}, '
                            f'but the class declares {side}_term_names = {tuple(names)}')
        return terms
