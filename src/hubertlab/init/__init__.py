"""`hubertlab init`: a pipeline config sized to the user's corpus and hardware.

sizing (the rules, pure), step_time (a training step timed on this machine), config_text (the
commented TOML), corpus (scan, split, write: init_run)."""
