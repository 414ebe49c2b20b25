"""Running a benchmark: the evaluation loop, the run folder (fingerprint, chunks, run.json, resume) and the commands behind eval, prepare and report."""
