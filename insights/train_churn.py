"""`python -m insights.train_churn`: fit the churn model in a process of its own.

Reads `(histories, as_of)` pickled on stdin, writes `train_churn_model`'s result (a `LinearChurnModel` of
plain floats, or None) pickled on stdout, and exits. storage/insights/service.py starts it for the daily
job, so NumPy, SciPy and scikit-learn load here and never in the process that runs the jobs (on SQLite: the
serving worker). Both ends are this package's own code: the pickles never come from elsewhere.
"""

from __future__ import annotations

import pickle
import sys

from insights.churn import train_churn_model


def main() -> None:
    histories, as_of = pickle.load(sys.stdin.buffer)
    pickle.dump(train_churn_model(histories, as_of), sys.stdout.buffer)


if __name__ == "__main__":
    main()
