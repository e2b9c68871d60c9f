"""Invalid manifests: each with its exact message (file, line, key path, problem, fix)."""
from __future__ import annotations

import pytest

from cartsync import manifest
from cartsync.errors import ManifestError

OK_SOURCE = "source: {dir: src, method: all}\n"
T = "targets:\n  - {name: a, url: out}\n"

CASES = [
    ("unknown_top_key", "version: 1\n" + OK_SOURCE + "target:\n  - {name: a, url: out}\n",
     ["m.yaml:1: (top level): missing required key 'targets'",
      "m.yaml:3: target: unknown key (did you mean 'targets'?)"]),
    ("unknown_source_key", "version: 1\nsource:\n  dir: src\n  methd: all\n" + T,
     ["m.yaml:4: source.methd: unknown key (did you mean 'method'?)"]),
    ("bad_method", "version: 1\nsource: {dir: src, method: everything}\n" + T,
     ['m.yaml:2: source.method: a string "everything" is not allowed (use one of: all, catalog, list)']),
    ("bad_overwrite", "version: 1\n" + OK_SOURCE + "targets:\n  - name: a\n    url: out\n    overwrite: sometimes\n",
     ['m.yaml:6: targets[0].overwrite: a string "sometimes" is not allowed (use one of: changed, always, never)']),
    ("delete_as_string", "version: 1\n" + OK_SOURCE + "targets:\n  - name: a\n    url: out\n    delete: \"yes\"\n",
     ['m.yaml:6: targets[0].delete: expected true or false, got a string "yes"']),
    ("wrong_version", "version: 2\n" + OK_SOURCE + T,
     ["m.yaml:1: version: a number 2 is not allowed (use 1)"]),
    ("catalog_as_with_all", "version: 1\nsource: {dir: src, method: all, catalog_as: c.yaml}\n" + T,
     ["m.yaml:2: source.catalog_as: is only used with method: catalog (method is all)"]),
    ("catalog_as_with_folder", "version: 1\nsource: {dir: src, catalog_as: a/c.yaml}\n" + T,
     ['m.yaml:2: source.catalog_as: a string "a/c.yaml" has the wrong form (a file name without folders, e.g. '
      'catalog.yaml)']),
    ("no_targets", "version: 1\n" + OK_SOURCE + "targets: []\n",
     ["m.yaml:3: targets: must not be empty (list at least one item)"]),
    ("missing_source", "version: 1\n" + T,
     ["m.yaml:1: (top level): missing required key 'source'"]),
    ("duplicate_target", "version: 1\n" + OK_SOURCE + "targets:\n  - {name: a, url: out}\n  - {name: a, url: out2}\n",
     ["m.yaml:5: targets[1].name: duplicate target name 'a' (also targets[0]) (give each target a unique name)"]),
    ("url_and_zenodo", "version: 1\n" + OK_SOURCE + "targets:\n  - name: a\n    url: out\n    zenodo: {metadata: {title: abc}}\n",
     ["m.yaml:4: targets[0]: needs exactly one of `url` (a store) or `zenodo` (a deposition)"]),
    ("neither_url_nor_zenodo", "version: 1\n" + OK_SOURCE + "targets:\n  - name: a\n",
     ["m.yaml:4: targets[0]: needs exactly one of `url` (a store) or `zenodo` (a deposition)"]),
    ("creator_without_comma", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n      deposition: 123\n"
     "      metadata:\n        creators: [\"Jane Doe\"]\n",
     ['m.yaml:8: targets[0].zenodo.metadata.creators[0]: a string "Jane Doe" has the wrong form (write "Lastname, '
      'Firstname" or {name: "Lastname, Firstname", affiliation: …, orcid: …})']),
    ("bad_orcid", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n      deposition: 1\n"
     "      metadata:\n        creators: [{name: \"Doe, Jane\", orcid: \"1234\"}]\n",
     ['m.yaml:8: targets[0].zenodo.metadata.creators[0].orcid: a string "1234" has the wrong form '
      "(an ORCID looks like 0000-0002-1825-0097)"]),
    ("new_deposition_needs_metadata", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n"
     "      metadata: {title: My data}\n",
     [f"m.yaml:6: targets[0].zenodo.metadata: missing {k!r} (title, upload_type, description and creators are "
      "needed for a new deposition)" for k in ("upload_type", "description", "creators")]),
    ("list_without_files", "version: 1\nsource: {dir: src, method: list}\n" + T,
     ["m.yaml:2: source: method: list needs a non-empty `files` list"]),
    ("not_a_mapping", "- just\n- a list\n",
     ["m.yaml:1: (top level): expected a mapping with version, source and targets, got a list"]),
    ("empty_file", "",
     ["m.yaml: (top level): expected a mapping with version, source and targets, got nothing"]),
    ("secret_in_url", "version: 1\n" + OK_SOURCE + "targets:\n  - {name: a, url: \"s3://bucket/x?secret=abc\"}\n",
     ["m.yaml:4: targets[0].url: looks like it holds a credential (put credentials in the environment, a profile "
      "or storage_options, never in the URL)"]),
    ("password_in_url", "version: 1\n" + OK_SOURCE + "targets:\n  - {name: a, url: \"https://user:pw@host/x\"}\n",
     ["m.yaml:4: targets[0].url: looks like it holds a credential (put credentials in the environment, a profile "
      "or storage_options, never in the URL)"]),
    ("unset_variable", "version: 1\nsource: {dir: \"${CARTSYNC_NOPE_VAR}/src\", method: all}\n" + T,
     ["m.yaml:2: source.dir: environment variable CARTSYNC_NOPE_VAR is not set"]),
    ("part_size_too_small", "version: 1\n" + OK_SOURCE + "targets:\n  - {name: a, url: \"s3://bucket/x\", part_size: 1MiB}\n",
     ["m.yaml:4: targets[0].part_size: 1048576 bytes is below the S3 minimum part size (use at least 5MiB)"]),
    ("target_name_with_space", "version: 1\n" + OK_SOURCE + "targets:\n  - {name: \"my target\", url: out}\n",
     ['m.yaml:4: targets[0].name: a string "my target" has the wrong form (use letters, digits, ".", "_" and "-")']),
    ("metadata_typo", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n      deposition: 1\n"
     "      metadata: {titel: abc}\n",
     ["m.yaml:7: targets[0].zenodo.metadata.titel: unknown key (did you mean 'title'?)"]),
    ("token_file_and_env", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n      deposition: 1\n"
     "      token_file: t\n      token_env: T\n      metadata: {}\n",
     ["m.yaml:6: targets[0].zenodo: give token_file or token_env, not both"]),
    ("bad_upload_type", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n      deposition: 1\n"
     "      metadata: {upload_type: data}\n",
     ['m.yaml:7: targets[0].zenodo.metadata.upload_type: a string "data" is not allowed (use one of: publication, '
      "poster, presentation, dataset, image, video, software, lesson, physicalobject, other)"]),
    ("token_env_is_a_value", "version: 1\n" + OK_SOURCE + "targets:\n  - name: doi\n    zenodo:\n      deposition: 1\n"
     "      token_env: \"abc-123-secret\"\n      metadata: {}\n",
     # never echoed: a value that is no variable name may be the token itself
     ["m.yaml:7: targets[0].zenodo.token_env: the value given (14 characters) is not the name of an environment "
      "variable (name an environment variable that holds the token, e.g. token_env: ZENODO_TOKEN, or use "
      "token_file; if the token was shared, revoke it on Zenodo)"]),
    ("files_with_catalog_method", "version: 1\nsource:\n  dir: src\n  method: catalog\n  files: [a.txt]\n" + T,
     ["m.yaml:5: source.files: is only used with method: list (method is catalog)"]),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_invalid_manifest_messages(tmp_path, monkeypatch, name, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ManifestError) as info:
        manifest.load("m.yaml")
    assert info.value.problems == expected


def test_all_problems_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text("version: 1\nsource:\n  dir: nope\n  method: all\n  exlude: []\n"
                                     "targets:\n  - name: a\n    url: out\n    overwrite: no\n")
    with pytest.raises(ManifestError) as info:
        manifest.load("m.yaml")
    assert str(info.value) == (
        "invalid manifest (3 problems):\n"
        f"  m.yaml:3: source.dir: {tmp_path}/nope does not exist (paths are relative to the manifest's folder)\n"
        "  m.yaml:5: source.exlude: unknown key (did you mean 'exclude'?)\n"
        "  m.yaml:9: targets[0].overwrite: a boolean false is not allowed (use one of: changed, always, never)")


def test_malformed_yaml_names_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text("version: 1\nsource: {dir: src\ntargets: []\n")
    with pytest.raises(ManifestError) as info:
        manifest.load("m.yaml")
    assert info.value.problems == ["m.yaml:3: not valid YAML: expected ',' or '}', but got ':'"]
    assert info.value.hint == "check indentation and quoting"


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError) as info:
        manifest.load(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path}/nope.yaml: no such file"]


def test_paths_resolve_against_manifest_folder_with_tilde_and_vars(tmp_path, monkeypatch):
    (tmp_path / "sub" / "data").mkdir(parents=True)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "sub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sub" / "m.yaml").write_text(
        "version: 1\nsource: {dir: \"${DATA_ROOT}/data\", method: all}\ntargets:\n"
        "  - {name: a, url: out}\n  - {name: b, url: \"~/elsewhere\"}\n  - {name: c, url: \"memory://x/y\"}\n")
    m = manifest.load(tmp_path / "sub" / "m.yaml")
    assert m.source.dir == tmp_path / "sub" / "data"
    assert [t.url for t in m.targets] == [str(tmp_path / "sub" / "out"), str(tmp_path / "elsewhere"), "memory://x/y"]
    assert (m.source.method, m.targets[0].overwrite, m.targets[0].delete) == ("all", "changed", False)


def test_example_manifest_is_valid_and_schema_is_shipped():
    from helpers import REPO
    m = manifest.load(REPO / "manifests" / "example.yaml")
    assert m.source.method == "catalog" and m.targets[0].name == "local"
    assert manifest.schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert (REPO / "schemas" / "manifest.schema.json").read_text() == (
        REPO / "cartsync" / "schemas" / "manifest.schema.json").read_text()


def test_a_passing_schema_check_is_remembered_by_content(tmp_path, monkeypatch):
    """An unchanged manifest skips the JSON Schema check (and importing jsonschema) on re-runs; any edit
    is checked again, and the checks that look at the disk run every time."""
    import os
    import sys
    from pathlib import Path
    (tmp_path / "src").mkdir()
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nsource: {dir: src}\ntargets:\n  - {name: web, url: out}\n")
    manifest.load(path)
    assert len(list((Path(os.environ["CARTSYNC_CACHE_DIR"]) / "valid-manifests").iterdir())) == 1

    monkeypatch.setitem(sys.modules, "jsonschema", None)       # importing it now fails
    assert manifest.load(path).targets[0].name == "web"

    path.write_text("version: 1\nsource: {dir: src}\ntargets:\n  - {name: web, url: out, delete: 'yes'}\n")
    with pytest.raises(ImportError):                           # an edit goes through the schema again
        manifest.load(path)
    monkeypatch.delitem(sys.modules, "jsonschema")
    with pytest.raises(ManifestError, match="delete: expected true or false"):
        manifest.load(path)

    path.write_text("version: 1\nsource: {dir: src}\ntargets:\n  - {name: web, url: out}\n")
    (tmp_path / "src").rmdir()
    with pytest.raises(ManifestError, match="source.dir"):
        manifest.load(path)


def test_schema_keywords_without_a_wording_keep_jsonschemas_message(tmp_path, monkeypatch):
    """problems.RENDER words the keywords users meet; any other (uniqueItems, maximum) says jsonschema's own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "m.yaml").write_text("version: 1\nsource: {dir: src, method: catalog, parts: [basics, basics]}\n"
                                     "targets:\n  - {name: a, url: out, part_concurrency: 100}\n")
    with pytest.raises(ManifestError) as info:
        manifest.load("m.yaml")
    assert info.value.problems == ["m.yaml:2: source.parts: ['basics', 'basics'] has non-unique elements",
                                   "m.yaml:4: targets[0].part_concurrency: 100 is greater than the maximum of 64"]


def test_every_schema_keyword_that_can_fail_is_worded_or_deliberately_left_to_jsonschema():
    from cartsync import problems
    used: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            used.update(k for k in node if k in KEYWORDS)
            for k, v in node.items():
                if k not in ("properties", "$defs"):
                    walk(v)
                else:
                    for sub in v.values():
                        walk(sub)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(manifest.schema())
    assert used - set(problems.RENDER) == {"maximum", "minProperties", "uniqueItems"}


KEYWORDS = {"additionalProperties", "const", "enum", "maximum", "minimum", "minItems", "maxItems", "minLength",
            "maxLength", "minProperties", "oneOf", "anyOf", "allOf", "not", "pattern", "required", "type",
            "uniqueItems", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "dependentRequired", "if"}
