"""One rank's run: the benchmark loop (set up, measure, collect, record), the hooks around
it (checkpoints, summaries, traces) and the evaluation of a checkpoint."""
