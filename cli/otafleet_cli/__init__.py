"""The otafleet command-line interface for release engineers and operators."""
