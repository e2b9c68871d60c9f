"""cartloader's upload_aws / upload_zenodo command lines, run as cartsync commands.

The documented lines (../shared/cartloader-upload.md, quoting cartloader's "Data Repository Upload" page) run
literally, with only `cartloader` → `cartsync` and the paths and endpoints pointed at the loopback servers;
the end state is read back independently (boto3 on the moto server, the Zenodo fake's own records, the disk).
"""
from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import EXAMPLE, s3_md5s

TOKEN = "test-token-zz9"
# the files the example's catalog names, and the catalog: what cartloader's catalog method sends
CATALOG_SET = {p.name for p in EXAMPLE.iterdir() if p.is_file()} - {"run_cartload2.log", "t12-f24.done"}
OPTIONAL = {"t12-f24-umap.tsv.gz", "t12-f24.umap.png"}


def md5s(root: Path, names: set[str]) -> dict[str, str]:
    return {n: hashlib.md5((root / n).read_bytes()).hexdigest() for n in names}


def line(text: str, **subst: str) -> list[str]:
    """A documented command line as argv: `cartloader` dropped, placeholders replaced."""
    words = shlex.split(text.replace("\\\n", " "))
    assert words[0] == "cartloader"
    return [subst.get(w, w) for w in words[1:]]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def token(here) -> Path:
    path = here / "zenodo_token.txt"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def copy_example(dst: Path, dataset_id: str | None = None) -> Path:
    shutil.copytree(EXAMPLE, dst)
    if dataset_id is not None:
        cat = dst / "catalog.yaml"
        cat.write_text(cat.read_text().replace("id: example-mouse-brain", f"id: {dataset_id}"))
    return dst


# ---- upload_aws -----------------------------------------------------------------------------------

AWS_LONG = """cartloader upload_aws \\
  --in-dir /path/to/run_cartload2/output/directory \\
  --s3-dir "s3://${AWS_BUCKET}/${DATA_ID}" \\
  --aws /path/to/your/aws/binary \\
  --n-jobs 10"""
AWS_SHORT = 'cartloader upload_aws --in-dir ./cartload2 --s3-dir "s3://${AWS_BUCKET}/${DATA_ID}" --aws ${aws} ' \
            '--n-jobs ${n_jobs}'


@pytest.mark.parametrize("doc", [AWS_LONG, AWS_SHORT], ids=["long", "short"])
def test_documented_upload_aws_lines(doc, here, s3, cli, monkeypatch):
    data = copy_example(here / "cartload2")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)      # the user's `aws configure`, pointed here
    s3_dir = f"s3://{s3.bucket}/EXAMPLE_ID"
    argv = line(doc.replace('"s3://${AWS_BUCKET}/${DATA_ID}"', s3_dir).replace("${n_jobs}", "10"),
                **{"/path/to/run_cartload2/output/directory": str(data), "${aws}": "/usr/local/bin/aws",
                   "./cartload2": "./cartload2", "/path/to/your/aws/binary": "/usr/local/bin/aws"})
    assert argv[0] == "upload_aws"
    code, out, err = cli(*argv)
    assert code == 0, err
    assert s3_md5s(s3, "EXAMPLE_ID") == md5s(data, CATALOG_SET)
    # cartloader's flags, after the run succeeded: the basics, and one per optional / basemap file
    assert (data / "cartload.aws.done").is_file()
    assert {p.name for p in data.glob("*.aws.done")} == {"cartload.aws.done"} | {f"{n}.aws.done" for n in OPTIONAL}
    code, out, _ = cli(*argv)
    assert (code, out) == (0, f"aws: no changes; {len(CATALOG_SET)} file(s) up to date; 0 B sent.\n")


def test_endpoint_in_the_aws_flag_is_honoured(here, s3, cli):
    """No AWS_ENDPOINT_URL_S3: without honouring --aws, this would go to AWS itself."""
    data = copy_example(here / "cartload2")
    code, out, err = cli("upload_aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/viaaws",
                         "--aws", f"aws --endpoint-url {s3.endpoint_url} --region us-east-1")
    assert code == 0, err
    assert s3_md5s(s3, "viaaws") == md5s(data, CATALOG_SET)
    code, out, err = cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/viaflag",
                         "--endpoint-url", s3.endpoint_url)
    assert code == 0, err
    assert s3_md5s(s3, "viaflag") == md5s(data, CATALOG_SET)
    code, out, _ = cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/viaaws",
                       "--aws", f"aws --endpoint-url={s3.endpoint_url}", "--print-manifest")
    assert f"  storage_options:\n    endpoint_url: {s3.endpoint_url}\n" in out


@pytest.mark.parametrize("aws,message", [
    ("aws --debug", "--aws: cartsync cannot honour '--debug' (it talks to S3 itself, without the aws CLI)"),
    ("aws s3 --sse", "--aws: cartsync cannot honour a word of 2 characters (it talks to S3 itself, without the aws "
                     "CLI)"),
    ("aws --endpoint-url", "--aws: --endpoint-url needs a value"),
    ("aws --profile 'unclosed", "--aws: cannot be split into words (No closing quotation)"),
])
def test_anything_else_in_aws_is_refused(aws, message, here, s3, cli):
    copy_example(here / "cartload2")
    code, out, err = cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/x", "--aws", aws)
    assert (code, out) == (1, "") and err.startswith(f"error: {message}\n")
    assert s3.list_objects(s3.bucket, "") == {}


def test_tls_and_profile_words_become_storage_options(here, cli, s3):
    copy_example(here / "cartload2")
    code, out, _ = cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/x", "--aws",
                       "/opt/aws/bin/aws --profile lab --no-verify-ssl --region eu-west-1", "--print-manifest")
    assert code == 0
    assert out.split("  storage_options:\n", 1)[1] == ("    profile: lab\n    region: eu-west-1\n"
                                                      "    client_kwargs:\n      verify: false\n")
    code, out, err = cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/x", "--aws",
                         "aws --profile lab", "--profile", "other")
    assert (code, err) == (1, "error: --profile and --aws --profile disagree\nhint: give --profile once\n")


def test_catalog_under_another_name_is_published_as_catalog_yaml(here, s3, cli, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    data = copy_example(here / "cartload2")
    (data / "catalog.yaml").rename(data / "catalog_v2.yaml")
    code, out, err = cli("upload_aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/v2",
                         "--catalog-yaml", "cartload2/catalog_v2.yaml")
    assert code == 0, err
    got = s3_md5s(s3, "v2")
    assert "catalog_v2.yaml" not in got
    assert got["catalog.yaml"] == hashlib.md5((data / "catalog_v2.yaml").read_bytes()).hexdigest()
    assert set(got) == CATALOG_SET
    # a catalog outside --in-dir: its files are read from --in-dir, as cartloader does
    outside = here / "catalogs" / "mine.yaml"
    outside.parent.mkdir()
    shutil.move(data / "catalog_v2.yaml", outside)
    code, _out, err = cli("upload_aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/out",
                         "--catalog-yaml", str(outside))
    assert code == 0, err
    assert s3_md5s(s3, "out") == {**md5s(data, CATALOG_SET - {"catalog.yaml"}),
                                  "catalog.yaml": hashlib.md5(outside.read_bytes()).hexdigest()}


def test_collection_sub_prefix_and_quoted_in_list(here, s3, cli, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    copy_example(here / "coll" / "Sample_One")
    cat = here / "coll" / "Sample_One" / "catalog.yaml"
    cat.write_text(cat.read_text().replace("id: example-mouse-brain\n", ""))
    copy_example(here / "coll" / "s2", dataset_id="second-sample")
    (here / "list.tsv").write_text('"Sample_One"\t/data/one.tsv.gz\t"a title, with a tab-free comma"\ns2\t/x\n')
    code, _out, err = cli("upload_aws", "--in-dir", "coll", "--s3-dir", f"s3://{s3.bucket}/coll", "--in-list",
                         "list.tsv", "--upload-basics-only")
    assert code == 0, err
    keys = s3_md5s(s3, "coll")
    assert {k.split("/")[0] for k in keys} == {"sample-one", "second-sample"}
    assert {k.split("/")[1] for k in keys} == CATALOG_SET - OPTIONAL      # basics only
    for sample in ("Sample_One", "s2"):
        assert [p.name for p in (here / "coll" / sample).glob("*.done") if "aws" in p.name] == ["cartload.aws.done"]


def test_flags_are_not_written_after_a_failure(here, s3, cli):
    """cartloader touches its flags even after a failed copy; cartsync only after everything went."""
    from faultproxy import FaultProxy
    data = copy_example(here / "cartload2")
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method == "PUT" and "t12-f24.umap.png" in target)
        code, out, _err = cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/p",
                             "--endpoint-url", proxy.url)
    assert code == 1 and "  FAILED t12-f24.umap.png: access denied writing to" in out
    assert list(data.glob("*.aws.done")) == []
    assert cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/p", "--endpoint-url",
               s3.endpoint_url)[0] == 0
    assert (data / "cartload.aws.done").is_file() and (data / "t12-f24.umap.png.aws.done").is_file()


def test_dry_run_writes_no_flags(here, s3, cli, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    data = copy_example(here / "cartload2")
    assert cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/p", "--dry-run")[0] == 0
    assert list(data.glob("*.aws.done")) == [] and s3.list_objects(s3.bucket, "") == {}


# ---- upload_zenodo --------------------------------------------------------------------------------

ZENODO_EXISTING = """cartloader upload_zenodo \\
    --in-dir /path/to/run_cartload2/output/directory \\
    --upload-method catalog \\
    --zenodo-token /path/to/zenodo_token.txt \\
    --zenodo-deposition-id ${zenodo_depostion_ID}"""
ZENODO_NEW = """cartloader upload_zenodo \\
  --upload-method catalog \\
  --in-dir /path/to/run_cartload2/output/directory \\
  --zenodo-token /path/to/zenodo_token.txt \\
  --create-new-deposition \\
  --title  "Title Info" \\
  --creators "Creator Name" \\
  --description "Description Info\""""


def test_documented_upload_zenodo_lines(here, token, zenodo, cli):
    data = copy_example(here / "run_cartload2")
    paths = {"/path/to/run_cartload2/output/directory": str(data), "/path/to/zenodo_token.txt": str(token)}
    new = line(ZENODO_NEW, **paths) + ["--zenodo-url", zenodo.url]
    code, out, err = cli(*new)
    assert code == 0, err
    (dep,) = zenodo.depositions.values()
    assert zenodo.files_of(dep.id) == md5s(data, CATALOG_SET) and not dep.submitted
    assert (dep.metadata["title"], dep.metadata["description"], dep.metadata["upload_type"]) == (
        "Title Info", "Description Info", "dataset")
    assert [c["name"] for c in dep.metadata["creators"]] == ["Creator Name"]         # as given, as cartloader
    assert (data / "cartload.zenodo.done").is_file()
    assert {p.name for p in data.glob("*.zenodo.done")} == {"cartload.zenodo.done"} | {
        f"{n}.zenodo.done" for n in OPTIONAL}
    zenodo.reset_log()
    code, out, err = cli(*new)                                  # the same line again: the same deposition
    assert (code, out) == (0, f"zenodo: no changes; {len(CATALOG_SET)} file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 1 and zenodo.count("PUT", "/api/files/") == 0
    existing = line(ZENODO_EXISTING.replace("${zenodo_depostion_ID}", str(dep.id)), **paths)
    code, out, err = cli(*existing, "--zenodo-url", zenodo.url)
    assert (code, out) == (0, f"zenodo: no changes; {len(CATALOG_SET)} file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 1


def test_two_datasets_from_one_folder_make_two_depositions(here, token, zenodo, cli, tmp_path_factory,
                                                           monkeypatch):
    a = copy_example(here / "A")
    c = copy_example(here / "C", dataset_id="dataset-c")
    (c / "genes_all.pmtiles").write_bytes(b"C's own genes")
    common = ["--upload-method", "catalog", "--zenodo-token", str(token), "--zenodo-url", zenodo.url,
              "--creators", "Doe, Jane"]
    assert cli("upload_zenodo", "--in-dir", "A", "--title", "Dataset A", *common)[0] == 0
    assert cli("upload_zenodo", "--in-dir", "C", "--title", "Dataset C", *common)[0] == 0
    assert zenodo.deposition_count() == 2
    by_title = {d.metadata["title"]: d for d in zenodo.depositions.values()}
    assert zenodo.files_of(by_title["Dataset A"].id) == md5s(a, CATALOG_SET)
    assert zenodo.files_of(by_title["Dataset C"].id) == md5s(c, CATALOG_SET)
    # each dataset's record is in its own folder, none in the folder the commands ran from
    assert (a / ".cartsync-upload-zenodo.json").is_file() and (c / ".cartsync-upload-zenodo.json").is_file()
    assert list(here.glob("*cartsync*")) == []
    # A's command again, from another folder: A's deposition, nothing sent, no third deposition
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    zenodo.reset_log()
    code, out, _err = cli("upload_zenodo", "--in-dir", str(a), "--title", "Dataset A", *common)
    assert (code, out) == (0, f"zenodo: no changes; {len(CATALOG_SET)} file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 2 and zenodo.count("PUT", "/api/files/") == 0


def test_one_folder_two_catalogs_make_two_depositions(here, token, zenodo, cli):
    data = copy_example(here / "cartload2")
    (data / "other.yaml").write_text("id: other-view\nassets:\n  sge:\n    all: genes_all.pmtiles\n")
    common = ["--in-dir", "cartload2", "--upload-method", "catalog", "--zenodo-token", str(token),
              "--zenodo-url", zenodo.url, "--creators", "Doe, Jane", "--title", "Same title"]
    assert cli("upload_zenodo", *common)[0] == 0
    assert cli("upload_zenodo", *common, "--catalog-yaml", "cartload2/other.yaml")[0] == 0
    assert sorted(len(d.files) for d in zenodo.depositions.values()) == [2, len(CATALOG_SET)]


def test_cartloader_defaults_all_method_and_description(here, token, zenodo, cli):
    """cartloader's code: no deposition id → a new deposition; method all = glob(in_dir/*) files; no
    description → "No description provided."; creators sent as given."""
    data = copy_example(here / "cartload2")
    (data / ".DS_Store").write_text("finder")
    (data / "cartload.aws.done").touch()
    code, _out, err = cli("upload_zenodo", "--in-dir", "cartload2", "--zenodo-token", str(token), "--zenodo-url",
                         zenodo.url, "--title", "Atlas", "--creators", "Human Cell Atlas")
    assert code == 0, err
    assert 'note: no --description: the deposition\'s description is "No description provided." (cartloader\'s ' \
           "default); add --description to set it\n" in err
    (dep,) = zenodo.depositions.values()
    top_level = {p.name for p in EXAMPLE.iterdir() if p.is_file()}                  # no tmp/, no dotfiles
    assert zenodo.files_of(dep.id) == md5s(data, top_level)
    assert dep.metadata["description"] == "No description provided."
    assert dep.metadata["creators"] == [{"name": "Human Cell Atlas"}]
    assert not (data / "cartload.zenodo.done").exists()      # cartloader writes it for the catalog method only


def test_new_deposition_needs_title_and_creators(here, token, zenodo, cli):
    copy_example(here / "cartload2")
    code, out, err = cli("upload_zenodo", "--in-dir", "cartload2", "--zenodo-token", str(token), "--zenodo-url",
                         zenodo.url)
    assert (code, out, err) == (1, "", "error: --title and --creators are required when creating a new deposition\n"
                                       'hint: add --title "…" --creators "Lastname, Firstname", or upload into an '
                                       "existing deposition with --zenodo-deposition-id ID\n")
    assert zenodo.requests == []


def test_errors_name_the_flags(here, token, zenodo, cli, monkeypatch):
    copy_example(here / "cartload2")
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    base = ["upload_zenodo", "--in-dir", "cartload2", "--zenodo-url", zenodo.url, "--title", "T itle",
            "--creators", "Doe, Jane"]
    assert cli(*base) == (1, "", "error: no Zenodo token: --zenodo-token is not given and ZENODO_TOKEN is not set\n"
                                 "hint: pass --zenodo-token FILE (a file holding the token, as with cartloader), "
                                 "or export ZENODO_TOKEN\n")
    assert cli(*base, "--zenodo-token", "tokn.txt") == (
        1, "", "error: --zenodo-token tokn.txt: no such file\nhint: pass the path of a file holding the token (from "
               "Zenodo's Applications settings), not the token itself\n")
    code, out, err = cli(*base, "--zenodo-token", TOKEN.replace("-", ""))        # the token itself, pasted
    assert code == 1 and TOKEN.replace("-", "") not in err
    assert err.startswith("error: --zenodo-token (a value of 12 characters, not a path): no such file\n")
    code, out, err = cli(*base[:-4], "--title", "ab", "--creators", "Doe, Jane", "--zenodo-token", str(token))
    assert (code, out, err) == (1, "", 'error: --title: a string "ab" is too short (at least 3 characters)\n')
    assert zenodo.requests == []


def test_upload_type_is_limited_to_zenodos_choices(here, token, cli, capsys):
    with pytest.raises(SystemExit) as info:
        cli("upload_zenodo", "--in-dir", ".", "--upload-type", "thesis")
    assert info.value.code == 1
    assert "argument --upload-type: invalid choice: 'thesis' (choose from 'dataset', 'software', 'publication', " \
           "'poster', 'presentation', 'image', 'video', 'lesson', 'other')" in capsys.readouterr().err


def test_print_manifest_validates_keeps_jobs_and_no_secret(here, token, zenodo, cli):
    copy_example(here / "cartload2")
    base = ["upload_zenodo", "--in-dir", "cartload2", "--zenodo-token", str(token), "--zenodo-url", zenodo.url,
            "--creators", "Doe, Jane", "--print-manifest", "--n-jobs", "12"]
    code, out, err = cli(*base, "--title", "Good title")
    assert code == 0 and out.startswith("# cartsync manifest translated from `cartsync upload-zenodo`; run it with:\n"
                                        "#   cartsync apply FILE --jobs 12\n")
    assert TOKEN not in out and f"token_file: {token}\n" in out
    saved = here / "publish.yaml"
    saved.write_text(out)
    assert cli("validate", saved)[0] == 0
    code, out, err = cli(*base, "--title", "no")
    assert (code, out) == (1, "") and err == 'error: --title: a string "no" is too short (at least 3 characters)\n'


def test_user_list_as_documented_and_files_absolute_inside(here, token, zenodo, cli):
    data = copy_example(here / "cartload2")
    common = ["--in-dir", "cartload2", "--zenodo-token", str(token), "--zenodo-url", zenodo.url, "--title",
              "Some files", "--creators", "Doe, Jane", "--description", "d"]
    code, out, err = cli("upload_zenodo", "--upload-method", "user_list", "--in-list", "genes_all.pmtiles",
                         "catalog.yaml", *common)
    assert code == 0, err
    (dep,) = zenodo.depositions.values()
    assert zenodo.files_of(dep.id) == md5s(data, {"genes_all.pmtiles", "catalog.yaml"})
    code, out, err = cli("upload_zenodo", "--upload-method", "files", "--files", str(data / "genes_bin1.pmtiles"),
                         *common)
    assert code == 0, err
    assert set(zenodo.files_of(dep.id)) == {"genes_all.pmtiles", "catalog.yaml", "genes_bin1.pmtiles"}
    (here / "outside.tsv").write_text("no")
    code, _out, err = cli("upload_zenodo", "--upload-method", "files", "--files", str(here / "outside.tsv"), *common)
    assert (code, err) == (1, f"error: --files {here / 'outside.tsv'}: outside --in-dir {data}\nhint: only files "
                              "inside --in-dir can be uploaded (copy or link the file into it)\n")


def test_zenodo_flags_not_written_after_a_failed_upload(here, token, zenodo, cli):
    data = copy_example(here / "cartload2")
    zenodo.fail_next(20, status=400, path_contains="genes_bin1", method="PUT")
    code, _out, _err = cli("upload_zenodo", "--in-dir", "cartload2", "--upload-method", "catalog", "--zenodo-token",
                         str(token), "--zenodo-url", zenodo.url, "--title", "T itle", "--creators", "Doe, Jane")
    assert code == 1
    assert list(data.glob("*.zenodo.done")) == []


def test_underscore_aliases_are_shown_once(cli, capsys):
    with pytest.raises(SystemExit):
        cli("--help")
    help_text = capsys.readouterr().out
    listed = [ln.split()[0] for ln in help_text.splitlines() if ln.startswith("    ") and ln.split()]
    assert [w for w in listed if "upload" in w] == ["upload-aws", "upload-zenodo"]       # one entry each
    assert help_text.count("upload-aws (upload_aws)") == 1 and help_text.count("upload-zenodo (upload_zenodo)") == 1


def test_cartsyncs_own_help_example_runs(here, token, zenodo, cli, monkeypatch):
    """The upload-zenodo example in `cartsync --help` gives no --description: it used to stop with a schema
    error naming a manifest file that does not exist."""
    from cartsync.cli import EXAMPLES
    example = EXAMPLES.split("  cartsync upload-zenodo ", 1)[1].split("\n\n", 1)[0].rstrip("\n")
    data = copy_example(here / "out")
    monkeypatch.setenv("HOME", str(here))
    token.rename(here / ".zenodo_token")
    argv = ["upload-zenodo", *(w if w != "~/.zenodo_token" else str(here / ".zenodo_token")
                               for w in shlex.split(example.replace("\\\n", " ")))]
    code, out, err = cli(*argv, "--zenodo-url", zenodo.url)
    assert code == 0, err
    (dep,) = zenodo.depositions.values()
    assert zenodo.files_of(dep.id) == md5s(data, CATALOG_SET)
    assert dep.metadata["description"] == "No description provided."
