"""The built-in demo: an eSpeak NG corpus with exact phone alignments, and the recipe that
runs the whole loop on it."""
