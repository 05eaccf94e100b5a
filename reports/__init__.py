"""Report building: pandas tables, matplotlib figures and one self-contained HTML page per run.

May import: ``bench.store`` (runs and records) and the shared modules of ``bench``; only
``bench.commands`` imports this package.
"""

import matplotlib

matplotlib.use("Agg")  # reports draw into files and never open a window, display or not
