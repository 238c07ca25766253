"""Pure analysis of finished results: arm identity, worst cases, robustness, intervals (no torch, no I/O)."""
