"""Stopping on SIGTERM / SIGINT: checkpoint at the next step boundary, then exit 75.

`StopFlag` records the signal; `run_stage` (`train.loop`) saves and raises `TrainingInterrupted`;
`main.py` exits with `EXIT_INTERRUPTED` and a rerun of the same command resumes.
"""

import logging
import signal
import threading

# main.py's exit status after a SIGTERM/SIGINT stopped the run and its checkpoint was saved
# (EX_TEMPFAIL of sysexits.h: "try again"); 0 means every stage finished.
EXIT_INTERRUPTED = 75


class TrainingInterrupted(Exception):
    """Raised after a SIGTERM/SIGINT: the state was checkpointed and the run can be resumed.

    `main.py` then exits with status `EXIT_INTERRUPTED` (75).
    """


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and stops at the next step boundary."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signum
        logging.warning("received signal %d: checkpointing at the end of this step and stopping "
                        "(send it again to stop at once)", signum)
        # A second signal acts as usual (e.g. a second Ctrl-C during a long compile).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
