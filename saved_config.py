"""The "args" of a run's config.json, checked as --test and the figures read them back: a file
edited by hand gets a message naming the key and what is wrong with it, never a TypeError or a
"damaged checkpoint" later on. The rules are the flags' own: their types, choices and ranges,
and each method's declared options."""
import argparse
import dataclasses
import json
import types

import model
import utils
from training import distribution, methods

AT_LEAST_ONE = ('iters', 'sample_every', 'ckpt_every', 'log_every', 'num_tasks', 'classes', 'devices')
TYPE_NAMES = {int: 'a whole number', float: 'a number', str: 'a string', bool: 'true or false',
              dict: 'an object', type(None): 'null'}


def shown(value):
    return json.dumps(value)


def type_problem(value, annotation):
    """Why a JSON value does not fit a field's annotation (str, int | None, ...), else None."""
    wanted = annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)
    accepted = (*wanted, int) if float in wanted else wanted  # JSON may write 1.0 as 1
    if isinstance(value, accepted) and (bool in wanted or not isinstance(value, bool)):
        return None
    return f'is {shown(value)}, not ' + ' or '.join(TYPE_NAMES[t] for t in wanted)


def args_problem(args, fields, datasets, spelled=None):
    """What is wrong with config.json's "args" for a TrainConfig of `fields`, naming the key,
    else None. spelled: {key: the older name the file uses for it} for the messages."""
    if not isinstance(args, dict):
        return f'"args" is {shown(args)}, not an object'

    def name(key):
        return f'args.{(spelled or {}).get(key, key)}'

    known = {field.name: field for field in fields}
    unknown = sorted(set(args) - set(known))
    if unknown:
        return f'{name(unknown[0])} is not a setting of this project'
    for key, field in known.items():
        if key == 'result_path':  # the folder the file is in, whatever it says
            continue
        if key not in args:
            if field.default is dataclasses.MISSING:
                return f'{name(key)} is missing'
            continue
        problem = type_problem(args[key], field.type)
        if problem:
            return f'{name(key)} {problem}'
    return value_problem(args, datasets, name) or options_problem(args, name)


def value_problem(args, datasets, name):
    choices = {'dataset': tuple(datasets), 'method': tuple(methods.METHODS), 'precision': model.PRECISIONS,
               'distribute': distribution.KINDS}
    for key, allowed in choices.items():
        if key in args and args[key] not in allowed:
            return f'{name(key)} is {shown(args[key])}: not a {key} this project knows ({", ".join(allowed)})'
    for key in AT_LEAST_ONE:
        if args.get(key) is not None and args[key] < 1:
            return f'{name(key)} is {shown(args[key])}, not at least 1'
    if not 0 <= args['seed'] < 2 ** 32:
        return f'{name("seed")} is {shown(args["seed"])}, not between 0 and 2**32 - 1'
    return None


def options_problem(args, name):
    """The method's options: its own, each as its flag would take it."""
    method = methods.METHODS[args['method']]
    options = args.get('method_options', {})
    for key, value in options.items():
        option = method.options.get(key)
        if option is None:
            return (f'{name("method_options")}.{key} is not an option of {method.name} '
                    f'({", ".join(method.options) or "it has none"})')
        problem = option_problem(option, value)
        if problem:
            return f'{name("method_options")}.{key} {problem}'
    missing = [key for key in method.options if key not in options and key not in method.older_run_options()]
    return f'{name("method_options")}.{missing[0]} is missing' if missing else None


def option_problem(option, value):
    expected = {str: str, utils.positive_int: int}.get(option.type, float)
    problem = type_problem(value, expected)
    if problem:
        return problem
    try:
        option.type(str(value))
    except (argparse.ArgumentTypeError, ValueError) as error:
        return f'is {shown(value)}: {error}'
    if option.choices and value not in option.choices:
        return f'is {shown(value)}, not one of {", ".join(option.choices)}'
    return None
