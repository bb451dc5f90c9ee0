"""Joint training, the upper bound: one conditional WGAN-GP on all classes at once.

    python joint.py --dataset mnist --result_path DIR [--classes N] [--test]

The same model, losses and compiled step as main.py, as a single task whose
real batches mix every class and whose fake labels are uniform over them.
"""
import sys

import exits

if __name__ == '__main__':
    exits.stop_on_sigterm()  # from the first import on, as Ctrl-C
with exits.command_line('joint.py'):  # Ctrl-C while TensorFlow loads
    import quiet  # noqa: F401  (before TensorFlow loads)
    import run_config
    import runs


def main(argv=None):
    return runs.run(run_config.joint_parser(), argv, joint=True)


if __name__ == '__main__':
    with exits.command_line('joint.py'):
        sys.exit(main())
