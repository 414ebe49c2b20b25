"""Run configs: the frozen value types (types) and their YAML/CLI parsing (loading)."""
