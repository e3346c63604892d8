"""The local stack: the whole service on a laptop, no AWS account, no Docker."""
