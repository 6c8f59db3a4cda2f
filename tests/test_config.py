"""The bake config file: TOML or YAML, checked field by field, secrets read from the environment."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest
import xarray as xr

from arcoforge.cli import EXIT_OK, EXIT_RECIPE, main
from arcoforge.config import BakeConfig, load_config
from arcoforge.errors import RecipeError

FEEDSTOCKS = Path(__file__).parents[1] / "feedstocks"

TOML = """
[target]
root = "s3://bucket/stores"
storage_options = { key = "${ARCOFORGE_TEST_KEY}", secret = "${ARCOFORGE_TEST_SECRET}", client_kwargs = { endpoint_url = "http://127.0.0.1:9000" } }

[cache]
root = "/scratch/cache"

[inputs]
storage_options = { anon = true }

[runner]
name = "dask"
num_workers = 3
max_mem = "2GB"
options = { experiments = ["x"] }

[runner.dask]
address = "tcp://scheduler:8786"

[stac]
enabled = false
"""

YAML = """
target:
  root: s3://bucket/stores
  storage_options:
    key: ${ARCOFORGE_TEST_KEY}
    secret: ${ARCOFORGE_TEST_SECRET}
    client_kwargs: {endpoint_url: "http://127.0.0.1:9000"}
cache: {root: /scratch/cache}
inputs: {storage_options: {anon: true}}
runner:
  name: dask
  num_workers: 3
  max_mem: 2GB
  options: {experiments: [x]}
  dask: {address: "tcp://scheduler:8786"}
stac: {enabled: false}
"""


def test_toml_and_yaml_read_the_same(tmp_path):
    (tmp_path / "bake.toml").write_text(TOML)
    (tmp_path / "bake.yaml").write_text(YAML)
    from_toml, from_yaml = load_config(tmp_path / "bake.toml"), load_config(tmp_path / "bake.yaml")
    assert {**from_toml.__dict__, "source": None} == {**from_yaml.__dict__, "source": None}
    assert from_toml.target_root == "s3://bucket/stores" and from_toml.cache_root == "/scratch/cache"
    assert from_toml.runner == "dask" and from_toml.num_workers == 3 and from_toml.max_mem == "2GB"
    assert from_toml.dask == {"address": "tcp://scheduler:8786"} and from_toml.stac is False
    assert from_toml.pipeline_options == {"experiments": ["x"]}
    assert from_toml.source_storage_options == {"anon": True}
    assert from_toml.secret_references() == {"target_storage_options.key": "ARCOFORGE_TEST_KEY",
                                             "target_storage_options.secret": "ARCOFORGE_TEST_SECRET"}


def test_secrets_come_from_the_environment_and_stay_out_of_messages(tmp_path, monkeypatch, caplog):
    (tmp_path / "bake.toml").write_text(TOML)
    config = load_config(tmp_path / "bake.toml")
    monkeypatch.setenv("ARCOFORGE_TEST_KEY", "AKIA-TEST-KEY-123")
    monkeypatch.delenv("ARCOFORGE_TEST_SECRET", raising=False)
    with pytest.raises(RecipeError) as failure:
        config.resolved()
    message = str(failure.value)
    assert "target.storage_options.secret names environment variable ARCOFORGE_TEST_SECRET, which is not set" \
        in message
    assert "AKIA-TEST-KEY-123" not in message
    monkeypatch.setenv("ARCOFORGE_TEST_SECRET", "very-secret-value-456")
    resolved = config.resolved()
    assert resolved.target_storage_options["secret"] == "very-secret-value-456"
    assert resolved.target_storage_options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9000"}
    assert config.target_storage_options["secret"] == "${ARCOFORGE_TEST_SECRET}"  # the file's value is kept
    with caplog.at_level(logging.INFO):
        logging.getLogger("arcoforge.test").info("options %s", resolved.target_storage_options)
    assert "very-secret-value-456" not in caplog.text  # registered for redaction from every log record


def test_every_problem_names_its_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent("""
        [target]
        root = 3
        [runner]
        name = "spark"
        num_workers = 0
        [runner.dataflow]
        projct = "typo"
        temp_location = "/tmp"
        [extra]
    """))
    with pytest.raises(RecipeError) as failure:
        load_config(path)
    message = str(failure.value)
    assert f"{path}: field target.root: 3 is not valid; expected a path or fsspec URL" in message
    assert "field runner.name: 'spark' is not valid; expected one of direct, dask, dataflow, flink" in message
    assert "field runner.num_workers: 0 is not valid; expected a whole number of at least 1" in message
    assert "field runner.dataflow: unknown field(s) projct; expected some of" in message
    assert "field runner.dataflow.temp_location: '/tmp' is not valid; expected a gs:// URL" in message
    assert "field (top level): unknown field(s) extra" in message
    (tmp_path / "broken.toml").write_text("[target\n")
    with pytest.raises(RecipeError, match="broken.toml: not valid TOML"):
        load_config(tmp_path / "broken.toml")
    with pytest.raises(RecipeError, match="expected a .toml, .yaml or .yml file"):
        (tmp_path / "bake.ini").write_text("")
        load_config(tmp_path / "bake.ini")


def test_flags_override_the_file():
    config = BakeConfig(target_root="/from/file", runner="dask", dask={"address": "tcp://a:1", "n_workers": 4})
    updated = config.with_overrides(target_root="/from/flag", runner=None, dask={"address": "tcp://b:2"})
    assert updated.target_root == "/from/flag" and updated.runner == "dask"
    assert updated.dask == {"address": "tcp://b:2", "n_workers": 4}
    with pytest.raises(RecipeError, match="runner 'spark' is not one of"):
        config.with_overrides(runner="spark")


def test_bake_takes_its_target_from_the_config_and_flags_win(tmp_path, capsys):
    config = tmp_path / "bake.yaml"
    config.write_text(f"target: {{root: {tmp_path / 'from-config'}}}\nstac: {{enabled: false}}\n")
    assert main(["-q", "bake", str(FEEDSTOCKS / "daily-sst"), "--prune", "1", "--config", str(config),
                 "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["stores"] == [f"{tmp_path / 'from-config'}/daily-sst.zarr"] and result["stac"] == []
    assert xr.open_zarr(result["stores"][0]).sizes["time"] == 1
    assert main(["-q", "bake", str(FEEDSTOCKS / "daily-sst"), "--prune", "1", "--config", str(config),
                 "--target-root", str(tmp_path / "from-flag")]) == EXIT_OK
    assert (tmp_path / "from-flag" / "daily-sst.zarr").is_dir()
    capsys.readouterr()
    config.write_text("runner: {name: dataflow}\n")
    assert main(["-q", "bake", str(FEEDSTOCKS / "daily-sst"), "--config", str(config), "--json"]) == EXIT_RECIPE
    captured = capsys.readouterr()
    result = json.loads(captured.out.splitlines()[-1])
    assert result["status"] == "failed" and result["exit_code"] == EXIT_RECIPE and result["error_class"] == "recipe"
    assert "--runner dataflow needs runner.dataflow.project" in result["error"]
    assert captured.err.count("arcoforge: error:") == 1 and "Traceback" not in captured.err
