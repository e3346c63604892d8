"""The Python of a Lambda sandbox, tuned for its cold start.

A cold start creates boto3 clients (each loads a service model of tens of thousands of objects) and
imports the handler's modules: hundreds of thousands of allocations that all stay alive for the
sandbox's life, during which the cyclic collector runs over and over and finds nothing to free (about
a sixth of a cold start here: bench/cold.py). So in a sandbox the collector is off from the first import
of otafleet until the first invocation has ended; then everything alive is frozen (gc.freeze: the
collector no longer walks it at every full collection of a warm invocation) and collection resumes.

Only where Lambda says it is running (AWS_LAMBDA_FUNCTION_NAME): the CLI, the local stack and the tests
keep Python's defaults.
"""

from __future__ import annotations

import gc
import os

IN_LAMBDA = "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def starting() -> None:
    """At the first import of otafleet, in a sandbox: no collection until the first invocation is done."""
    if IN_LAMBDA:
        gc.disable()


def first_invocation_done() -> None:
    """After the first invocation, in a sandbox: what init made is frozen, collection resumes."""
    if IN_LAMBDA and not gc.isenabled():
        gc.freeze()
        gc.enable()
