"""How the command lines end when stopped from outside: Ctrl-C and SIGTERM print one line and
exit with the code a shell gives a process the signal killed (130, 143); a reader that closes
stdout (`| head`) ends the command quietly with 141, as SIGPIPE would. Never a traceback.
Standard library only: the command lines import it before TensorFlow loads."""
import contextlib
import os
import signal
import sys

PIPE_CLOSED = 128 + signal.SIGPIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that whatever handles Ctrl-C handles it too."""


def _raise_terminated(signum, frame):
    raise Terminated()


def stop_on_sigterm():
    """From here on, SIGTERM (kill, a batch system's time limit) stops the process as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(interrupt):
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def exit_interrupted(interrupt, message):
    """One line, 'interrupted <message>' or 'stopped by SIGTERM <message>', and the signal's exit code."""
    what = 'stopped by SIGTERM' if isinstance(interrupt, Terminated) else 'interrupted'
    print(f'\n{what} {message}', file=sys.stderr)
    sys.exit(exit_code(interrupt))


def discard_stdout():
    """The reader has gone: what is still printed, Python's flush at exit included, goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextlib.contextmanager
def command_line(name):
    """Around a whole command line, imports included: an interrupt that nothing closer handled
    ends in one line. A closed stdout ends the command quietly: with 141 where it stops the
    work, with the command's own code when only the last flush finds it (the work is done)."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        exit_interrupted(interrupt, f'({name})')
    except BrokenPipeError:
        discard_stdout()
        sys.exit(PIPE_CLOSED)
    finally:
        try:
            if sys.stdout is not None:  # None: started with stdout closed (>&-)
                sys.stdout.flush()  # here, not at exit, where Python would report the closed pipe
        except BrokenPipeError:
            discard_stdout()
