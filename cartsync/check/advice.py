"""The exact configuration that fixes what the checks found, ready to paste: an S3 CORS rule for the
viewer's origin (`aws s3api put-bucket-cors`) and a public-read bucket policy for the dataset's prefix
(new AWS buckets block public access and disable ACLs, so a policy is the way to allow anonymous reads)."""
from __future__ import annotations

import json
import shlex

# What a PMTiles viewer needs: GET/HEAD with Range (If-Match is sent by pmtiles.js on retries after an
# ETag change) and the three headers it reads exposed.
EXPOSE = ["ETag", "Content-Length", "Content-Range"]


def cors_rules(origin: str) -> dict:
    return {"CORSRules": [{"AllowedOrigins": [origin], "AllowedMethods": ["GET", "HEAD"],
                           "AllowedHeaders": ["Range", "If-Match"], "ExposeHeaders": EXPOSE,
                           "MaxAgeSeconds": 3600}]}


def cors_advice(origin: str, bucket: str | None) -> str:
    body = json.dumps(cors_rules(origin), indent=2)
    if bucket:
        return (f"Set this CORS rule on bucket {bucket} (it replaces the bucket's CORS configuration: merge any "
                f"rules you already have, see `aws s3api get-bucket-cors --bucket {bucket}`):\n"
                f"  aws s3api put-bucket-cors --bucket {bucket} --cors-configuration "
                f"{shlex.quote(json.dumps(cors_rules(origin)))}")
    return ("Configure the server (or CDN) in front of the files to answer CORS like this S3 rule: allow origin "
            f"{origin}, methods GET and HEAD, request headers Range and If-Match, expose {', '.join(EXPOSE)}:\n{body}")


def public_policy(bucket: str, prefix: str) -> dict:
    resource = f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}*"
    return {"Version": "2012-10-17", "Statement": [{"Sid": "PublicReadForViewers", "Effect": "Allow",
                                                     "Principal": "*", "Action": "s3:GetObject",
                                                     "Resource": resource}]}


def policy_advice(bucket: str | None, prefix: str) -> str:
    if not bucket:
        return "Anonymous reads were refused: make the files publicly readable on the server (or CDN) that serves them."
    policy = json.dumps(public_policy(bucket, prefix))
    return (f"Anonymous reads were refused. Allow public reads of this dataset on bucket {bucket} (Block Public "
            "Access must allow a public bucket policy first; this makes everything under the prefix world-readable):\n"
            f"  aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration "
            "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false\n"
            f"  aws s3api put-bucket-policy --bucket {bucket} --policy {shlex.quote(policy)}")
