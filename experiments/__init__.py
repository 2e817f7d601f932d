"""Runnable experiments: ``python -m experiments.<name> [--quick] [--out DIR] [--resume]``."""

import sys

# While ``python -m`` looks for its module, sys.argv[0] is "-m" (Python's documentation
# of the -m option). So only ``python -m experiments.NAME`` records SIGINT and SIGTERM
# during the imports that follow. Importing the package (the tests, ``diffland train``)
# leaves the handlers alone.
if sys.argv[:1] == ["-m"]:
    from experiments import startup

    startup.record_stop_signals()
