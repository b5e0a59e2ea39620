"""Results: the results files (one per case and per run), the terminal summary."""
