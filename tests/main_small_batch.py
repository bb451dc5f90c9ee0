"""main.py with a training batch of 16 instead of the paper's 64, for the tests that run the
command line in a child process to check what does not depend on the batch (a killed run
resumed ends as an uninterrupted one) at about a quarter of the cost. Same flags as main.py."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_BATCH = 16

if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.argv[0] = os.path.join(ROOT, 'main.py')  # quiet.py reads the flags as main.py's
    import exits
    exits.stop_on_sigterm()
    with exits.command_line('main.py'):
        import main
        from training import dgr, ewc, sampling, trainer
        for module in (trainer, sampling, ewc, dgr):  # each holds its own name for the batch size
            assert hasattr(module, 'BATCH_SIZE'), module.__name__
            module.BATCH_SIZE = SMALL_BATCH
        sys.exit(main.main())
