"""Report building: pandas tables, matplotlib figures and one self-contained HTML page per run."""
