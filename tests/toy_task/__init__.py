"""A task that lives outside typoattack: one folder (config + task) registered from a test, with no line
of the CLI or the engine written for it (tests/test_toy_task.py)."""
