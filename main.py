"""Memory Replay GANs: learn image classes one task at a time.

    python main.py --dataset mnist [--RA --RA_factor 1e-3 | --JTR | --EWC | --DGR] --result_path DIR [--test]

Task t (0-based) holds class t. Without replay (SFT) the generator forgets the
earlier classes; MeRGAN keeps a frozen copy of the previous generator and
replays its samples, as training data (JTR) or through replay alignment (RA).
EWC and DGR are the paper's baselines. The methods are registered in training/methods.py.
"""
import sys

import exits

if __name__ == '__main__':
    exits.stop_on_sigterm()  # from the first import on, as Ctrl-C
with exits.command_line('main.py'):  # Ctrl-C while TensorFlow loads
    import quiet  # noqa: F401  (before TensorFlow loads)
    import run_config
    import runs


def main(argv=None):
    return runs.run(run_config.sequential_parser(), argv)


if __name__ == '__main__':
    with exits.command_line('main.py'):
        sys.exit(main())
