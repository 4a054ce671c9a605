"""Checkpoints that cannot silently poison a run: SHA-256 records, the last two kept, resume past a damaged one,
pickles refused, and a run directory with no checkpoint reused (issue 19)."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from mobilenetv3.train import CheckpointError, read_metrics, read_state, read_weights
from mobilenetv3.train import checkpoint as C
from mobilenetv3.train import commit as K
from test_train_run import last_weights, run_cli, small_run, strip_timing, tiny_spec


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("spec") / "tiny.json"
    tiny_spec().save(path)
    return str(path)


def flip(path: Path, at: int | None = None) -> None:
    """Flip every bit of one byte (the middle one by default)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# -- the generic commit store ----------------------------------------------------------------------------------
def commit_step(directory: Path, step: int, keep: int = 2) -> dict:
    files = {f"a-{step}.bin": f"first {step}".encode(), f"b-{step}.bin": f"second {step}".encode()}
    return K.commit(directory, files, {"global_step": step}, keep=keep, owned=lambda n: n[:2] in ("a-", "b-"))


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_commit_keeps_the_newest_n_and_records_every_kept_file(tmp_path, keep):
    for step in range(1, 6):
        pointer = commit_step(tmp_path, step, keep)
    steps = [e["global_step"] for e in K.pointer_entries(pointer)]
    assert steps == list(range(5, 5 - keep, -1))
    kept = sorted(n for e in K.pointer_entries(pointer) for n in e["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, K.POINTER])
    assert sorted(pointer["sha256"]) == kept
    for name in kept:
        assert K.read_verified(tmp_path / name) == (tmp_path / name).read_bytes()


def test_a_kill_before_the_pointer_leaves_the_previous_commit(tmp_path, monkeypatch):
    commit_step(tmp_path, 1)
    commit_step(tmp_path, 2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(K, "write_pointer", killed)
    with pytest.raises(KeyboardInterrupt):
        commit_step(tmp_path, 3)
    monkeypatch.undo()
    pointer = K.load_pointer(tmp_path)
    assert [e["global_step"] for e in K.pointer_entries(pointer)] == [2, 1]
    for e in K.pointer_entries(pointer):
        for name in e["files"]:
            K.read_verified(tmp_path / name)
    # The orphans of the killed commit go with the next one.
    assert (tmp_path / "a-3.bin").exists()
    commit_step(tmp_path, 4)
    assert not (tmp_path / "a-3.bin").exists() and not (tmp_path / "a-1.bin").exists()


def test_a_kill_while_deleting_leaves_every_named_file(tmp_path, monkeypatch):
    commit_step(tmp_path, 1)
    commit_step(tmp_path, 2)
    unlink = Path.unlink
    calls = []

    def unlink_once(self, missing_ok=False):
        calls.append(self.name)
        if len(calls) > 1:
            raise KeyboardInterrupt
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink_once)
    with pytest.raises(KeyboardInterrupt):
        commit_step(tmp_path, 3)
    monkeypatch.undo()
    pointer = K.load_pointer(tmp_path)
    assert [e["global_step"] for e in K.pointer_entries(pointer)] == [3, 2]
    for e in K.pointer_entries(pointer):
        for name in e["files"]:
            K.read_verified(tmp_path / name)


def commit_best(directory: Path, step: int, best: bytes | None) -> dict:
    """A commit that also replaces the fixed-name file ``best.bin`` (as a run's best.safetensors)."""
    return K.commit(directory, {f"a-{step}.bin": b"a%d" % step}, {"global_step": step}, track=("best.bin",),
                    replace=None if best is None else {"best.bin": best}, owned=lambda n: n.startswith("a-"))


def test_a_kill_before_a_replaced_file_is_written_leaves_its_previous_content_readable(tmp_path, monkeypatch):
    commit_best(tmp_path, 1, b"best of epoch 1")
    write = K.atomic_write_bytes

    def killed_at_best(path, data):
        if Path(path).name == "best.bin":
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(K, "atomic_write_bytes", killed_at_best)
    with pytest.raises(KeyboardInterrupt):
        commit_best(tmp_path, 2, b"best of epoch 2")
    monkeypatch.undo()
    # The pointer already names the new best, but the old one on disk is intact: it is read, not refused.
    assert K.load_pointer(tmp_path)["global_step"] == 2
    assert K.read_verified(tmp_path / "best.bin") == b"best of epoch 1"
    # The next commit records what is there; a later replacement is verified against its own digest.
    commit_best(tmp_path, 3, None)
    assert K.read_verified(tmp_path / "best.bin") == b"best of epoch 1"
    assert "replacing" not in K.load_pointer(tmp_path)
    commit_best(tmp_path, 4, b"best of epoch 4")
    assert K.read_verified(tmp_path / "best.bin") == b"best of epoch 4"


def test_a_damaged_tracked_file_is_not_recorded_as_good_by_the_next_commit(tmp_path):
    commit_best(tmp_path, 1, b"best of epoch 1")
    flip(tmp_path / "best.bin")
    commit_best(tmp_path, 2, None)  # a commit that does not replace best must not bless its damaged bytes
    with pytest.raises(CheckpointError, match="best.bin is truncated or corrupt"):
        K.read_verified(tmp_path / "best.bin")
    commit_best(tmp_path, 3, b"best of epoch 3")  # a new best replaces it, and verifies
    assert K.read_verified(tmp_path / "best.bin") == b"best of epoch 3"


def test_entries_at_or_beyond_a_redone_step_are_dropped(tmp_path):
    for step in (4, 8, 12):
        commit_step(tmp_path, step, keep=3)
    pointer = commit_step(tmp_path, 10, keep=3)  # a resume from step 8 checkpointing again at step 10
    assert [e["global_step"] for e in K.pointer_entries(pointer)] == [10, 8, 4]
    assert not (tmp_path / "a-12.bin").exists()


def test_every_single_byte_flip_of_the_pointer_is_found(tmp_path):
    commit_step(tmp_path, 1)
    commit_step(tmp_path, 2)
    path = tmp_path / K.POINTER
    original = path.read_bytes()
    for i in range(len(original)):
        for mask in (0x01, 0xFF):
            damaged = bytearray(original)
            damaged[i] ^= mask
            path.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointError, match="checkpoint.json is corrupt"):
                K.load_pointer(tmp_path)
    path.write_bytes(original)
    assert K.load_pointer(tmp_path)["global_step"] == 2


def test_a_changed_file_is_named_with_the_older_one_kept(tmp_path):
    commit_step(tmp_path, 1)
    commit_step(tmp_path, 2)
    flip(tmp_path / "a-2.bin")
    with pytest.raises(CheckpointError, match=r"a-2\.bin is truncated or corrupt: its SHA-256 differs.*"
                                              r"the checkpoint before it is kept as .*a-1\.bin"):
        K.read_verified(tmp_path / "a-2.bin")
    (tmp_path / "b-2.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"b-2\.bin is truncated or corrupt"):
        K.read_verified(tmp_path / "b-2.bin")


# -- the training-state file ---------------------------------------------------------------------------------
class Payload:
    """A pickle that would create a folder when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_state_file_is_refused_as_not_ours(tmp_path, writer):
    marker, path = tmp_path / "pwned", tmp_path / "ckpt-000000006.state.pt"
    state = {"format": C.STATE_FORMAT, "x": Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        read_state(path)
    message = str(info.value)
    assert "is not a checkpoint this tool wrote" in message and path.name in message
    assert "weights_only=False" not in message and "weights_only" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not marker.exists()


# -- runs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory, spec_file) -> Path:
    """2 epochs of 6 steps, checkpoints at steps 4, 6, 8 and 12: 12 and 8 kept."""
    out = tmp_path_factory.mktemp("ref") / "run"
    small_run(out, spec_file, checkpoint_every_steps=4)
    return out


def test_the_pointer_records_the_last_two_checkpoints_and_best(reference):
    pointer = json.loads((reference / "checkpoint.json").read_text())
    assert (pointer["weights"], pointer["state"]) == ("ckpt-000000012.safetensors", "ckpt-000000012.state.pt")
    assert [e["global_step"] for e in pointer["previous"]] == [8]
    assert sorted(pointer["sha256"]) == ["best.safetensors", "ckpt-000000008.safetensors", "ckpt-000000008.state.pt",
                                         "ckpt-000000012.safetensors", "ckpt-000000012.state.pt"]


def resume_copy(reference: Path, tmp_path: Path, spec_file, capsys, damage) -> tuple[dict, str]:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    damage(out)
    result = small_run(out, spec_file, resume=True, checkpoint_every_steps=4)
    return result, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["weights", "state", "missing", "truncated"])
def test_resume_passes_over_a_damaged_newest_checkpoint_and_ends_as_the_uninterrupted_run(
        reference, tmp_path, spec_file, capsys, kind):
    def damage(out):
        name = "ckpt-000000012.state.pt" if kind == "state" else "ckpt-000000012.safetensors"
        if kind == "missing":
            (out / name).unlink()
        elif kind == "truncated":
            (out / name).write_bytes((out / name).read_bytes()[:1000])
        else:
            flip(out / name)

    result, err = resume_copy(reference, tmp_path, spec_file, capsys, damage)
    damaged = "ckpt-000000012.state.pt" if kind == "state" else "ckpt-000000012.safetensors"
    assert damaged in err and "the checkpoint of step 12 cannot be used" in err
    assert "resuming from ckpt-000000008.safetensors (step 8) instead: steps 9-12 will be trained again" in err
    assert result["global_step"] == 12
    out = tmp_path / "run"
    assert strip_timing(read_metrics(out, None)) == strip_timing(read_metrics(reference, None))
    a, b = last_weights(reference), last_weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pointer = json.loads((out / "checkpoint.json").read_text())
    assert pointer["global_step"] == 12 and [e["global_step"] for e in pointer["previous"]] == [8]
    C.read_weights(out / pointer["weights"])  # the damaged file was replaced by a recorded one


def test_resume_with_no_usable_checkpoint_lists_each_file(reference, tmp_path, spec_file):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    flip(out / "ckpt-000000012.safetensors")
    flip(out / "ckpt-000000008.state.pt")
    (out / "ckpt-000000008.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        small_run(out, spec_file, resume=True)
    message = str(info.value)
    assert message.startswith(f"no checkpoint in {out} can be used:")
    for name in ("ckpt-000000012.safetensors is truncated or corrupt", "ckpt-000000008.state.pt is truncated",
                 "checkpoint file not found: " + str(out / "ckpt-000000008.safetensors")):
        assert name in message


def test_a_run_written_before_hashes_still_loads(reference, tmp_path, spec_file, capsys):
    """A format-1 pointer (one checkpoint, no digests) loads in silence; its next commit records digests."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    pointer = json.loads((out / "checkpoint.json").read_text())
    legacy = {k: pointer[k] for k in ("weights", "state", "epoch", "batch", "global_step", "time")}
    (out / "checkpoint.json").write_text(json.dumps(legacy, indent=2))
    groups, _ = read_weights(out / legacy["weights"])
    assert "model" in groups and read_state(out / legacy["state"])["global_step"] == 12
    result = small_run(out, spec_file, resume=True, epochs=3, keep=1)
    assert result["global_step"] == 18 and "warning" not in capsys.readouterr().err
    pointer = json.loads((out / "checkpoint.json").read_text())
    assert pointer["previous"] == [] and sorted(pointer["sha256"]) == [
        "best.safetensors", "ckpt-000000018.safetensors", "ckpt-000000018.state.pt"]
    assert not (out / "ckpt-000000012.safetensors").exists() and not (out / "ckpt-000000008.safetensors").exists()


def test_keep_is_validated(tmp_path, spec_file, capsys):
    with pytest.raises(ValueError, match="keep must be an integer >= 1, got 0"):
        small_run(tmp_path / "r", spec_file, keep=0)
    code, _, err = run_cli(capsys, "train", "--spec", spec_file, "--out", tmp_path / "r", "--keep", "0")
    assert code == 2 and "keep must be an integer >= 1" in err


# -- every command that reads a run refuses a flipped byte ---------------------------------------------------
@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, make_colour_folder) -> tuple[Path, str, Path]:
    """A CLI run on a tiny colour folder (3 steps an epoch, checkpoints at 2, 3, 4, 6): the run, data, spec."""
    from mobilenetv3.cli import main

    folder = make_colour_folder({"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}, 12, 4, 30)
    root = tmp_path_factory.mktemp("folder_run")
    spec = root / "rgb.json"
    tiny_spec(3).save(spec)
    out = root / "run"
    code = main([str(a) for a in ("train", "--spec", spec, "--data", folder, "--out", out, "--resolution", "16",
                                  "--epochs", "2", "--batch-size", "12", "--checkpoint-every-steps", "2", "--quiet",
                                  "--no-tensorboard")])
    assert code == 0
    return out, folder, spec


def commands(run: Path, folder: str, tmp_path: Path, checkpoint: str) -> dict[str, list]:
    image = Path(folder) / "val" / "red" / "0.png"
    init = run if checkpoint == "last" else run / "best.safetensors"
    return {
        "eval": ["eval", run, "--checkpoint", checkpoint],
        "predict": ["predict", run, image, "--checkpoint", checkpoint],
        "export": ["export", run, "--checkpoint", checkpoint, "--out", tmp_path / "model.onnx"],
        "init": ["train", "--init", init, "--out", tmp_path / "fine", "--epochs", "1", "--batch-size", "12",
                 "--quiet", "--no-tensorboard"],
    }


@pytest.mark.parametrize("name,readers", [
    ("ckpt-000000006.safetensors", ("eval", "predict", "export", "init")),
    ("best.safetensors", ("eval", "predict", "export", "init")),
    ("checkpoint.json", ("eval", "predict", "export", "init", "resume")),
])
def test_a_flipped_byte_is_refused_by_every_reader(folder_run, tmp_path, capsys, name, readers):
    source, folder, _ = folder_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    flip(run / name)
    checkpoint = "best" if name == "best.safetensors" else "last"
    argv = {**commands(run, folder, tmp_path, checkpoint), "resume": ["train", "--out", run, "--resume", "--quiet"]}
    for reader in readers:
        code, _, err = run_cli(capsys, *argv[reader])
        assert code == 2 and name in err and ("is corrupt" in err or "truncated or corrupt" in err), (reader, err)
        assert "weights_only=False" not in err
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "fine").exists()


@pytest.mark.parametrize("name", ["ckpt-000000006.safetensors", "ckpt-000000006.state.pt"])
def test_resume_names_a_flipped_file_of_the_cli_run(folder_run, tmp_path, capsys, name):
    source, _, _ = folder_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    flip(run / name)
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--quiet", "--epochs", "2")
    assert code == 0, err
    assert f"{name} is truncated or corrupt" in err and "steps 5-6 will be trained again" in err
    assert json.loads((run / "checkpoint.json").read_text())["global_step"] == 6


def test_an_undamaged_run_is_read_by_every_reader(folder_run, tmp_path, capsys):
    """The control for the test above: the same commands succeed on the intact run (export of the tiny model
    included), so what they refuse is the flipped byte."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run, folder, _ = folder_run
    for checkpoint in ("last", "best"):
        for reader, argv in commands(run, folder, tmp_path / checkpoint, checkpoint).items():
            if reader == "init" and checkpoint == "best":
                continue  # a bare weights file gives no data options; the run directory case covers --init
            code, _, err = run_cli(capsys, *argv)
            assert code == 0, (reader, checkpoint, err)


# -- a run directory with no checkpoint ---------------------------------------------------------------------------
def test_a_run_that_failed_before_its_first_step_is_retried_without_overwrite(make_colour_folder, tmp_path, capsys):
    folder = Path(make_colour_folder({"red": (200, 40, 40), "blue": (40, 40, 200)}, 6, 2, 30))
    empty = folder / "train" / "red" / "9.png"
    empty.write_bytes(b"")
    spec = tmp_path / "rgb.json"
    tiny_spec(3).save(spec)
    out = tmp_path / "run"
    argv = ["train", "--spec", spec, "--data", folder, "--out", out, "--resolution", "16", "--epochs", "1",
            "--batch-size", "13", "--on-corrupt", "fail", "--quiet", "--no-tensorboard"]  # one step: all 13
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "9.png: empty file (0 bytes)" in err
    assert (out / "config.json").exists() and not (out / "checkpoint.json").exists()
    shutil.copy(folder / "train" / "red" / "0.png", empty)  # the user fixes the file, runs the same command
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((out / "checkpoint.json").read_text())["global_step"] == 1
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    code, _, err = run_cli(capsys, *argv)  # a run with a checkpoint is protected as before
    assert code == 2 and "already holds a training run" in err

