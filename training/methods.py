"""The registry of continual-learning methods: the one list that the command lines, the
reports and figures, the benchmark and the protocol read. Each method is a class on
method_base.Method (its hooks are described there), in a module of its own."""
from training.dgr import DeepGenerativeReplay
from training.ewc import ElasticWeightConsolidation
from training.mergan import JointTrainingWithReplay, ReplayAlignment
from training.method_base import Method
from training.rehearsal import Rehearsal
from utils import UsageError


class SequentialFineTuning(Method):
    """SFT: no replay at all (the forgetting baseline)."""


class JointTraining(SequentialFineTuning):
    """The upper bound: one task of every class, trained as SFT trains (joint.py)."""
    name = 'joint'
    label = 'Joint'


METHODS = {cls.name: cls for cls in (SequentialFineTuning, ReplayAlignment, JointTrainingWithReplay,
                                     ElasticWeightConsolidation, DeepGenerativeReplay, Rehearsal, JointTraining)}


def selectable():
    """The methods main.py offers by flag, in registry order."""
    return [cls for cls in METHODS.values() if cls.flag]


def add_method_flags(parser):
    group = parser.add_argument_group('method (default: sequential fine tuning, SFT)')
    for cls in selectable():
        group.add_argument(cls.flag, action='store_true', help=cls.help)
        cls.add_option_flags(group)


def method_from_args(args, dataset_settings):
    """(method name, options) from parsed flags; raises UsageError for impossible combinations."""
    chosen = [cls for cls in selectable() if getattr(args, cls.flag.lstrip('-'))]
    if len(chosen) > 1:
        raise UsageError('choose one method: ' + ' or '.join(cls.flag for cls in chosen))
    for cls in selectable():
        for name in cls.options:
            if getattr(args, name) is not None and cls not in chosen:
                raise UsageError(f'--{name} needs {cls.flag}')
    method = chosen[0] if chosen else SequentialFineTuning
    return method.name, method.options_from_args(args, dataset_settings)


def method_for(name, options):
    """The method of a run, also of one saved before some of its options existed."""
    cls = METHODS[name]
    return cls(**{**cls.older_run_options(), **options})
