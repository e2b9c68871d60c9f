"""Where a browser reads a target from: the public HTTP(S) base URL of a url target.

- `public_url:` on the target wins (a CDN, a custom domain, a web server in front of a folder).
- s3:// with an endpoint (MinIO, Ceph, R2, a test server): path style, `<endpoint>/<bucket>/<prefix>/`; the endpoint
  as botocore finds it: storage_options `endpoint_url` (or client_kwargs'), AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
  then the profile's `endpoint_url` in the AWS config file.
- s3:// on AWS: virtual-hosted style with the bucket's region, `https://<bucket>.s3.<region>.amazonaws.com/<prefix>/`
  (path style on `s3.<region>.amazonaws.com` for bucket names with dots, whose TLS certificate would not match).
  The region comes from storage_options (`region`, `client_kwargs.region_name`), else from one anonymous HEAD of
  the bucket (S3 names it in `x-amz-bucket-region`, even when it refuses the request), else us-east-1.
- gs:// → `https://storage.googleapis.com/<bucket>/<prefix>/`.
- Anything else (a local folder, memory://) has no public URL unless `public_url:` says where it is served.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..backends.s3.sigv4 import config_profile
from ..config import TargetConfig
from . import web


@dataclass(frozen=True)
class PublicBase:
    """The public base URL of a target; `bucket`/`prefix` for S3 targets (to word the fixes)."""

    url: str                       # ends with "/"
    bucket: str | None = None
    prefix: str = ""
    aws: bool = False              # the fixes can be aws CLI commands

    def of(self, key: str) -> str:
        return self.url + quote(key, safe="/")


def s3_endpoint(options: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> str | None:
    """The S3 endpoint a target writes to, if not AWS itself (see the module docstring)."""
    found = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url") \
        or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if found:
        return str(found)
    profile = config_profile({**env, "AWS_PROFILE": str(options["profile"])} if options.get("profile") else env)
    return (profile or {}).get("endpoint_url") or None


def _region(target: TargetConfig, bucket: str) -> str:
    opts = target.storage_options
    region = opts.get("region") or (opts.get("client_kwargs") or {}).get("region_name")
    if region:
        return str(region)
    found = web.bucket_region(f"https://{bucket}.s3.amazonaws.com/")
    return found or "us-east-1"


def public_base(target: TargetConfig) -> PublicBase | None:
    """The target's public base URL, or None where it has none (see the module docstring). One anonymous
    HEAD at most (the AWS bucket region); never a credential."""
    scheme, _, rest = target.url.partition("://")
    bucket, _, prefix = rest.strip("/").partition("/") if rest else ("", "", "")
    dir_part = quote(prefix + "/", safe="/") if prefix else ""
    is_s3 = scheme in ("s3", "s3a")
    if target.public_url:
        return PublicBase(target.public_url.rstrip("/") + "/", bucket if is_s3 else None, prefix, aws=is_s3)
    if is_s3:
        endpoint = s3_endpoint(target.storage_options)
        if endpoint:
            return PublicBase(f"{str(endpoint).rstrip('/')}/{bucket}/{dir_part}", bucket, prefix, aws=True)
        region = _region(target, bucket)
        if "." in bucket:
            return PublicBase(f"https://s3.{region}.amazonaws.com/{bucket}/{dir_part}", bucket, prefix, aws=True)
        return PublicBase(f"https://{bucket}.s3.{region}.amazonaws.com/{dir_part}", bucket, prefix, aws=True)
    if scheme in ("gs", "gcs"):
        return PublicBase(f"https://storage.googleapis.com/{bucket}/{dir_part}")
    return None
