"""s3:// targets (and S3-compatible stores): the backend and the parts it is made of.

- backend.py: `S3Backend`, the Backend contract for S3 (reading, planning help, writes)
- client.py: botocore's client as s3fs would build it; the one place botocore errors are translated
- sigv4.py: AWS Signature V4 over plain HTTP(S), for the listing and the lock without botocore's start-up
- listing.py: ListObjectsV2 on that connection
- lock.py: the target's lock object (conditional writes)
- multipart.py: one multipart upload as an object (create, send parts, complete, abort; resumable)
- checksums.py: CRC32 per part, the composite checksum, the ETag from the parts' MD5s
- registry.py: which multipart uploads are cartsync's own (the cache folder)
- etags.py: what an ETag says (KMS, multipart) and resolving objects others wrote
- headers.py: the headers compared and fixed in place
- compat.py: what an S3-compatible store's refusals mean
"""
from .backend import S3Backend

__all__ = ["S3Backend"]
