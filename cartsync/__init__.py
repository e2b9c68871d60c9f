"""cartsync: publish spatial-omics outputs to S3/fsspec stores and Zenodo, declaratively."""

__version__ = "0.1.0"
