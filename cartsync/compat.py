"""cartloader's upload_aws / upload_zenodo command lines, translated into in-memory manifests."""
from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:  # filled in by the S3 and Zenodo work
    return None
