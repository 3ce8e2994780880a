"""The names of the methods compared in the metrics tables, the figures and the report."""

RAW = "raw"
RL_THEORETICAL = "RL (theoretical PSF)"
RL_LEARNED = "RL (learned PSF)"
CYCLEDECON = "cycledecon"
#: The ground truth, shown beside the methods where a sample has one.
TRUTH = "ground truth"
