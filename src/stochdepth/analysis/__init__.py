"""Analysis: gradient records, sweeps, and the report (the paper's tables and figures from runs)."""
