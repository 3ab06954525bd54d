"""cyclediff-serve's command before Ray starts: a damaged export is refused in one line (exit 2), a replica's load
error is shown as one line, Ray's noise is configured off, and --help names a Serve config file that exists."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from cyclediff.serve import cli, load_error
from cyclediff.serve.cluster import EMBEDDED_QUIET_ENV, QUIET_ENV, Cluster
from cyclediff.serve.load_error import ReplicaLoadError


@pytest.fixture
def damaged(exports, tmp_path):
    """damaged() -> a fresh copy of the tiny export, to break."""
    def copy() -> Path:
        folder = tmp_path / "export"
        shutil.copytree(exports("tiny"), folder)
        return folder

    return copy


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if the command gets as far as starting Ray."""
    def start(*_):
        raise AssertionError("Ray was started for an export the command should have refused")

    monkeypatch.setattr(Cluster, "start", start)


def _truncate(folder: Path) -> str:
    path = folder / "unet.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    return "truncated"


def _delete(folder: Path) -> str:
    (folder / "vae_decoder.onnx").unlink()
    return "missing"


def _swap_bytes(folder: Path) -> str:
    path = folder / "text_encoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the stamp tells
    path.write_bytes(bytes(data))
    return "does not match"


def _cut_manifest(folder: Path) -> str:
    path = folder / "manifest.json"
    path.write_text(path.read_text()[:300])
    return "not valid JSON"


def _list_manifest(folder: Path) -> str:
    (folder / "manifest.json").write_text("[1, 2]")
    return "could not be read"


def _manifest_without_models(folder: Path) -> str:
    path = folder / "manifest.json"
    d = json.loads(path.read_text())
    del d["models"]
    path.write_text(json.dumps(d))
    return "malformed"


def _delete_tokenizer_file(folder: Path) -> str:
    next((folder / "tokenizer").iterdir()).unlink()
    return "tokenizer file"


@pytest.mark.parametrize("damage", [_truncate, _delete, _swap_bytes, _cut_manifest, _list_manifest,
                                    _manifest_without_models, _delete_tokenizer_file])
def test_a_damaged_export_is_refused_before_ray_in_one_line(damaged, no_ray, capsys, damage):
    folder = damaged()
    words = damage(folder)
    assert cli.main(["--engine", str(folder), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cyclediff-serve: error: --engine {folder}: "), err
    assert words in err and "re-run `cyclediff-export`" in err, err


def test_no_export_there_names_the_fix(tmp_path, no_ray, capsys):
    assert cli.main(["--engine", str(tmp_path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "cyclediff-export --ckpt" in err and err.count("\n") == 1


def test_an_intact_export_passes_and_torch_reads_no_graphs(exports, damaged):
    cli.check_engine(str(exports("tiny")))  # no CliError
    folder = damaged()
    _delete(folder)
    with pytest.raises(cli.CliError, match="missing"):
        cli.check_engine(str(folder), "onnxruntime")
    cli.check_engine(str(folder), "torch")  # the torch backend reads the checkpoint, not the exported graphs


def test_a_decoder_engine_in_another_latent_space_is_refused_before_ray(exports, finetune, tmp_path, no_ray, capsys):
    cli.check_engine(str(exports("tiny")), decoder=str(finetune))  # a fine-tune of tiny: no CliError
    assert cli.main(["--engine", str(exports("tiny")), "--decoder-engine", str(exports("tiny-trailing")),
                     "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "--decoder-engine" in err and "cannot decode --engine's codes" in err and "beta_schedule" in err
    assert cli.main(["--engine", str(exports("tiny")), "--decoder-engine", str(tmp_path), "--port", "1"]) == 2
    assert f"--decoder-engine {tmp_path}: no manifest.json" in capsys.readouterr().err


# A failed replica as Serve reports it (ray 2.60): the deployment's status message, ending in the replica's error.
RAY_MESSAGE = """The deployment failed to start 3 times in a row. This may be due to a problem with its constructor \
or initial health check failing. See controller logs for details. Error:
\x1b[36mray::ServeReplica:cyclediff:EditServer.initialize_and_get_metadata()\x1b[39m (pid=8918, ip=192.0.2.2)
  File "/ray/serve/_private/replica.py", line 1928, in initialize
    raise RuntimeError(traceback.format_exc()) from None
RuntimeError: Traceback (most recent call last):
  File "/work/main/runtime/core/backends.py", line 59, in load_runners
    raise BackendError(
cyclediff.engine.base.BackendError: dtype='bf16' runs on backend 'openvino'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/work/main/serve/deployment.py", line 31, in __init__
    raise ReplicaLoadError.of(spec.folder, err) from err
cyclediff.serve.load_error.{line}
"""


def test_a_replica_load_error_is_one_line():
    err = ReplicaLoadError.of("/x", ValueError("first line\n  second line"))
    assert str(err) == "a replica could not load the Engine from /x: ValueError: first line second line"
    message = RAY_MESSAGE.format(line=f"ReplicaLoadError: {err}")
    assert load_error.summary(["", message], "Deploying application cyclediff failed") == str(err)


def test_a_replica_that_fails_otherwise_gets_its_last_line():
    message = "The deployment failed to start 3 times in a row.\nTraceback:\n  ...\n\x1b[31mOSError: no space left\x1b[0m\n"
    got = load_error.summary([message], "fallback")
    assert got.startswith("a replica failed to start: OSError: no space left") and "--verbose" in got
    assert load_error.summary([], "Deploying application cyclediff failed") == "Deploying application cyclediff failed"


def test_ray_noise_is_configured_off_unless_verbose():
    embedded, joined = Cluster(None, None, 128, False), Cluster("auto", None, 128, False)
    assert embedded._quiet_env() == {**QUIET_ENV, **EMBEDDED_QUIET_ENV}
    assert joined._quiet_env() == QUIET_ENV  # a joined cluster's own auth mode is left alone
    assert "RAY_AUTH_MODE" not in joined._quiet_env()
    assert Cluster(None, None, 128, True)._quiet_env() == {}


def test_help_names_a_serve_config_file_that_exists_and_ships():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    text = cli.build_parser().format_help()
    assert str(cli.CONFIG_FILE) in text and cli.CONFIG_FILE.is_file()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["cyclediff.serve"]
    assert any(Path(cli.CONFIG_FILE.name).match(p) for p in patterns)  # installed next to cli.py
