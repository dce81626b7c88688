"""export_teacher.py / teacher.export: sharded records from a real (random-weight) MSI-Net graph and the oracle,
verification, kill-and-resume, bad images, and the messages for missing data or weights."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import export_teacher
from datasets import records, shards
from datasets.io import read_image, read_map
from datasets.salicon import load_salicon_fixations
from teacher import export
from teacher.oracle import OracleTeacher

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEMS = [f"COCO_train2014_{i:012d}" for i in range(1, 9)]  # the conftest folder's 8 train images
VAL_STEMS = [f"COCO_val2014_{i:012d}" for i in range(1, 5)]


def read_back(out_dir, split):
    return [{k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ex.items()}
            for ex in records.read_records(records.list_shards(out_dir, split))]


def shard_names(split, n):
    return [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]


@pytest.fixture
def data_copy(synthetic_salicon_dir, tmp_path):
    """A writable copy of the tiny synthetic SALICON folder."""
    return Path(shutil.copytree(synthetic_salicon_dir, tmp_path / "data"))


def test_export_with_msinet_graph(msinet_pb, synthetic_salicon_dir, tmp_path):
    import tensorflow as tf

    from teacher.loading import load_teacher

    teacher = load_teacher(msinet_pb)
    out = tmp_path / "distill"
    # 48x64 images into a 48x48 input: resized to 36x48 with 6 padding rows above and below.
    manifest = export.export_split(synthetic_salicon_dir, "train", teacher, out, batch_size=3, images_per_shard=3,
                                   verify=True, progress=False, input_size=(48, 48))
    assert sorted(p.name for p in out.glob("train-*")) == shard_names("train", 3)
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 2]
    assert manifest["num_images"] == 8 and manifest["skipped"] == []
    assert manifest["sizes"] == {"image": {"48x64": 8}, "teacher": {"36x48": 8}}
    assert manifest["teacher"]["sha256"] == export.file_sha256(msinet_pb)
    assert manifest["teacher"]["name"] == "model_salicon_cpu.pb"

    examples = read_back(out, "train")
    assert [ex["stem"].decode() for ex in examples] == TRAIN_STEMS
    raw = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(records.list_shards(out, "train"))]
    for example, stem in zip(raw, TRAIN_STEMS):  # the original file, unchanged
        image_bytes = example.features.feature["image/encoded"].bytes_list.value[0]
        assert image_bytes == (synthetic_salicon_dir / "images" / "train" / f"{stem}.jpg").read_bytes()
    # Reference: the graph on the author's resize (TF1 area, 0.75) + pad 126, done here by hand.
    images = np.stack([read_image(synthetic_salicon_dir / "images" / "train" / f"{s}.jpg") for s in TRAIN_STEMS])
    resized = tf.compat.v1.image.resize_area(images.astype(np.float32), (36, 48), align_corners=True).numpy()
    padded = np.pad(np.clip(resized, 0, 255), [(0, 0), (6, 6), (0, 0), (0, 0)], constant_values=126.0)
    expected = teacher(padded).numpy()[:, 6:42, :, 0]
    for ex, stem, want in zip(examples, TRAIN_STEMS, expected):
        assert ex["teacher"].shape == (36, 48, 1) and ex["has_teacher"]
        np.testing.assert_allclose(ex["teacher"][:, :, 0], want, atol=1e-4)
        assert (ex["height"], ex["width"]) == (48, 64)
        np.testing.assert_array_equal(
            np.round(ex["saliency"][:, :, 0] * 255), read_map(synthetic_salicon_dir / "maps" / "train" / f"{stem}.png"))
        fixations = load_salicon_fixations(synthetic_salicon_dir / "fixations" / "train" / f"{stem}.mat")
        assert len(fixations) > 0
        np.testing.assert_array_equal(ex["fixations"], fixations)


def test_cli_oracle_all_splits_then_verify_only(synthetic_salicon_dir, tmp_path, capsys):
    out = tmp_path / "distill"
    args = ["--data-dir", str(synthetic_salicon_dir), "--teacher", "oracle", "--input-size", "24", "32",
            "--out", str(out), "--images-per-shard", "3", "--batch-size", "4", "--no-progress"]
    assert export_teacher.main(["--split", "all", *args]) == 0
    assert sorted(p.name for p in out.glob("*.tfrecord")) == shard_names("train", 3) + shard_names("val", 2)
    assert export_teacher.main(["--split", "all", "--verify-only", "--out", str(out)]) == 0
    assert "train: 8 images in 3 shards: verified" in capsys.readouterr().out

    oracle = OracleTeacher(synthetic_salicon_dir, input_size=(24, 32))
    examples = read_back(out, "val")
    assert [ex["stem"].decode() for ex in examples] == VAL_STEMS
    for ex in examples:
        want = oracle.predict(ex["stem"].decode())[0]  # 48x64 -> 24x32 exactly: no padding
        np.testing.assert_allclose(ex["teacher"][:, :, 0], want, atol=1 / 65535)
    manifest = json.loads((out / "val.json").read_text())
    assert manifest["teacher"]["format"] == "oracle" and manifest["teacher"]["input_size"] == [24, 32]
    assert not (out / "val.progress.json").exists() and (out / "val.plan.json").exists()


@pytest.fixture
def child_tmpdir(tmp_path):
    """A private TMPDIR for a child process that is killed: its temporary files (TensorFlow's
    `__autograph_generated_file*.py`, removed only at a normal exit) are removed with the folder, not left in
    the machine's temporary folder on every run."""
    folder = tmp_path / "child-tmp"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def test_killed_export_resumes_and_keeps_finished_shards(synthetic_salicon_dir, tmp_path, child_tmpdir):
    out = tmp_path / "distill"
    args = ["--split", "train", "--data-dir", str(synthetic_salicon_dir), "--teacher", "oracle",
            "--input-size", "24", "32", "--out", str(out), "--images-per-shard", "3", "--batch-size", "2",
            "--no-progress"]
    env = {**os.environ, export.KILL_AFTER_SHARDS_ENV: "1", "PYTHONPATH": str(REPO), "TMPDIR": str(child_tmpdir)}
    killed = subprocess.run([sys.executable, str(REPO / "export_teacher.py"), *args], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == export.KILL_EXIT_CODE, killed.stderr[-2000:]
    first, second = (out / name for name in shard_names("train", 3)[:2])
    assert first.exists() and not second.exists()
    assert list(out.glob(f".{second.name}.tmp-*")), "the unfinished shard should be left half-written"
    assert not (out / "train.json").exists()
    before = first.stat()

    assert export_teacher.main(args + ["--verify"]) == 0
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "finished shard was redone"
    assert not list(out.glob(".*tmp*"))
    stems = [ex["stem"].decode() for ex in read_back(out, "train")]
    assert stems == TRAIN_STEMS  # every image exactly once, in plan order


def test_bad_image_stops_or_is_skipped(data_copy, tmp_path):
    bad = data_copy / "images" / "train" / f"{TRAIN_STEMS[4]}.jpg"  # second shard of 3
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "distill"
    kwargs = dict(images_per_shard=3, batch_size=2, progress=False, input_size=(24, 32))
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    with pytest.raises(ValueError, match=str(bad)):
        export.export_split(data_copy, "train", teacher, out, **kwargs)
    assert (out / shard_names("train", 3)[0]).exists() and not (out / "train.json").exists()
    assert not list(out.glob(".*tmp*"))
    first = (out / shard_names("train", 3)[0]).stat()

    manifest = export.export_split(data_copy, "train", teacher, out, skip_bad=True, verify=True, **kwargs)
    assert (out / shard_names("train", 3)[0]).stat().st_mtime_ns == first.st_mtime_ns
    assert manifest["num_images"] == 7 and manifest["num_skipped"] == 1
    assert manifest["skipped"][0]["stem"] == TRAIN_STEMS[4] and str(bad) in manifest["skipped"][0]["error"]
    assert [s["count"] for s in manifest["shards"]] == [3, 2, 2]
    assert [ex["stem"].decode() for ex in read_back(out, "train")] == TRAIN_STEMS[:4] + TRAIN_STEMS[5:]


def test_verify_detects_tampering_and_extra_shards(synthetic_salicon_dir, tmp_path):
    out = tmp_path / "distill"
    export.export_split(synthetic_salicon_dir, "val", "oracle", out, images_per_shard=2, progress=False,
                        input_size=(24, 32))
    assert export.verify_split(out, "val")["num_images"] == 4
    extra = out / "val-00002-of-00003.tfrecord"
    shutil.copy(out / "val-00000-of-00002.tfrecord", extra)
    with pytest.raises(ValueError, match="not in the manifest"):
        export.verify_split(out, "val")
    extra.unlink()
    shard = out / "val-00001-of-00002.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 differs"):
        export.verify_split(out, "val")
    with pytest.raises(FileNotFoundError, match="has not finished"):
        export.verify_split(out, "train")


def test_rerun_with_another_teacher_is_refused(synthetic_salicon_dir, tmp_path):
    out = tmp_path / "distill"
    export.export_split(synthetic_salicon_dir, "val", "oracle", out, progress=False, input_size=(24, 32))
    with pytest.raises(ValueError, match="finished shards come from teacher"):
        export.export_split(synthetic_salicon_dir, "val", "oracle", out, progress=False, input_size=(48, 64))


def test_shard_size_from_file_sizes(synthetic_salicon_dir, tmp_path):
    out = tmp_path / "distill"
    target_mb = 0.02  # a few 48x64 records per shard
    manifest = export.export_split(synthetic_salicon_dir, "train", "oracle", out, shard_size_mb=target_mb,
                                   progress=False, input_size=(24, 32))
    n = manifest["num_shards"]
    assert 2 <= n <= 8
    assert sorted(p.name for p in out.glob("train-*")) == shard_names("train", n)
    sizes = [s["bytes"] for s in manifest["shards"]]
    assert sizes == [(out / s["name"]).stat().st_size for s in manifest["shards"]]
    # The estimate errs on the large side: no shard exceeds the target, and they are not tiny either.
    assert max(sizes) <= target_mb * 1e6 and np.mean(sizes) >= 0.4 * target_mb * 1e6


def run_cli(args, capsys):
    code = export_teacher.main(args)
    return code, capsys.readouterr().err


def test_missing_data_and_weights_messages(synthetic_salicon_dir, tmp_path, capsys):
    code, err = run_cli(["--data-dir", str(tmp_path / "salicon"), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert str(tmp_path / "salicon") in err and "salicon.net" in err and "download.py" in err

    weights = tmp_path / "weights" / "model_salicon_cpu.pb"
    code, err = run_cli(["--data-dir", str(synthetic_salicon_dir), "--teacher", str(weights),
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert str(weights) in err and "download.py" in err and "Drive" in err

    code, err = run_cli(["--data-dir", str(tmp_path), "--teacher", "oracle", "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "SALICON" in err and err.count("\n") == 1


def test_bad_image_cli_exit_code(data_copy, tmp_path, capsys):
    bad = data_copy / "images" / "val" / f"{VAL_STEMS[0]}.jpg"
    bad.write_bytes(b"")
    code, err = run_cli(["--split", "val", "--data-dir", str(data_copy), "--teacher", "oracle", "--input-size", "24",
                         "32", "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 1 and str(bad) in err and "--skip-bad" in err and err.count("\n") == 1


def test_every_bad_file_is_named_in_one_error(data_copy, tmp_path, capsys, monkeypatch):
    bad = [data_copy / "images" / "train" / f"{TRAIN_STEMS[i]}.jpg" for i in (3, 5, 7)]  # shards 2 and 3 of 3
    for path in bad:
        path.write_bytes(b"not a jpeg")
    out = tmp_path / "distill"
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    kwargs = dict(images_per_shard=3, batch_size=2, input_size=(24, 32))
    with pytest.raises(ValueError, match="3 bad input files") as error:
        export.export_split(data_copy, "train", teacher, out, progress=True, **kwargs)
    message = str(error.value)
    assert all(f"{path}: " in message for path in bad) and "--skip-bad" in message
    assert "checking the other 4 image(s)" in capsys.readouterr().err
    assert (out / shard_names("train", 3)[0]).exists() and not list(out.glob(".*tmp*"))

    monkeypatch.setattr(export, "MAX_LISTED_BAD_FILES", 2)
    code, err = run_cli(["--data-dir", str(data_copy), "--teacher", "oracle", "--input-size", "24", "32",
                         "--images-per-shard", "3", "--out", str(out), "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1 and "3 bad input files" in err and "; and 1 more." in err
    assert str(bad[0]) in err and str(bad[1]) in err and str(bad[2]) not in err

    for path in bad:  # one fix for all of them, then the export resumes
        _remove_sample(data_copy, "train", path.stem)
    manifest = export.export_split(data_copy, "train", teacher, out, progress=False, verify=True, **kwargs)
    assert manifest["num_images"] == 5


# --- issue 10: bad inputs named at export, resume after removing a file, full disk --------------------------

KW = dict(images_per_shard=3, batch_size=2, progress=False, input_size=(24, 32))


def _remove_sample(data, split, stem):
    for path in data.glob(f"*/{split}/{stem}.*"):
        path.unlink()


def test_tiff_named_jpg_is_refused_at_export_naming_the_file(data_copy, tmp_path):
    import cv2

    bad = data_copy / "images" / "train" / f"{TRAIN_STEMS[1]}.jpg"
    ok, tiff = cv2.imencode(".tiff", read_image(bad)[:, :, ::-1])
    bad.write_bytes(tiff.tobytes())
    assert read_image(bad).shape == (48, 64, 3)  # OpenCV reads it: only tf.io.decode_image would fail
    with pytest.raises(ValueError, match=rf"{bad}: TIFF file.*tf\.io\.decode_image"):
        export.export_split(data_copy, "train", OracleTeacher(data_copy, input_size=(24, 32)), tmp_path / "d", **KW)


def test_all_black_human_map_is_refused_naming_the_file(data_copy, tmp_path):
    import cv2

    black = data_copy / "maps" / "train" / f"{TRAIN_STEMS[2]}.png"
    cv2.imwrite(str(black), np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match=rf"{black}: the human map is all black"):
        export.export_split(data_copy, "train", OracleTeacher(data_copy, input_size=(24, 32)), tmp_path / "d", **KW)


def test_exif_rotated_jpeg_is_stored_upright_for_training(data_copy, tmp_path):
    """A phone photo: pixels stored sideways with EXIF orientation 6. Its map has the displayed size."""
    import io

    from PIL import Image, ImageOps

    path = data_copy / "images" / "train" / f"{TRAIN_STEMS[0]}.jpg"
    displayed = read_image(path)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(displayed, 1)))  # orientation 6 turns it back
    exif = stored.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=98, exif=exif)
    path.write_bytes(buffer.getvalue())
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB"))
    assert reference.shape == (48, 64, 3)
    assert np.abs(read_image(path).astype(int) - reference).mean() < 2  # the decoders differ by rounding only

    out = tmp_path / "d"
    export.export_split(data_copy, "train", OracleTeacher(data_copy, input_size=(24, 32)), out, **KW)
    first = read_back(out, "train")[0]  # decoded by tf.io.decode_image, as training does
    assert first["stem"].decode() == TRAIN_STEMS[0] and first["image"].shape == (48, 64, 3)
    assert np.abs(first["image"].astype(int) - reference).mean() < 2


def test_removing_a_bad_file_resumes_and_keeps_finished_shards(data_copy, tmp_path):
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    out = tmp_path / "d"
    bad = data_copy / "images" / "train" / f"{TRAIN_STEMS[4]}.jpg"  # second shard of 3
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="remove it .*run the same command again to resume"):
        export.export_split(data_copy, "train", teacher, out, **KW)
    first = (out / shard_names("train", 3)[0]).stat()
    _remove_sample(data_copy, "train", TRAIN_STEMS[4])

    manifest = export.export_split(data_copy, "train", teacher, out, verify=True, **KW)
    assert (out / shard_names("train", 3)[0]).stat().st_mtime_ns == first.st_mtime_ns
    assert manifest["num_images"] == 7 and manifest["num_shards"] == 3
    assert [ex["stem"].decode() for ex in read_back(out, "train")] == TRAIN_STEMS[:4] + TRAIN_STEMS[5:]


def test_a_plan_without_finished_shards_is_replaced(data_copy, tmp_path):
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    out = tmp_path / "d"
    bad = data_copy / "images" / "train" / f"{TRAIN_STEMS[0]}.jpg"  # first shard: nothing gets finished
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=str(bad)):
        export.export_split(data_copy, "train", teacher, out, **KW)
    assert (out / "train.plan.json").exists() and not list(out.glob("train-*.tfrecord"))
    _remove_sample(data_copy, "train", TRAIN_STEMS[0])
    # Also another shard size: a plan with nothing finished does not bind the rerun.
    manifest = export.export_split(data_copy, "train", teacher, out, verify=True, **dict(KW, images_per_shard=4))
    assert manifest["num_images"] == 7 and manifest["num_shards"] == 2


def test_removed_file_of_a_finished_shard_says_exactly_what_to_do(data_copy, tmp_path):
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    out = tmp_path / "d"
    bad = data_copy / "images" / "train" / f"{TRAIN_STEMS[4]}.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError):
        export.export_split(data_copy, "train", teacher, out, **KW)
    _remove_sample(data_copy, "train", TRAIN_STEMS[0])  # an image of the finished first shard
    with pytest.raises(ValueError, match=rf"{TRAIN_STEMS[0]}; put them back to resume, or delete"):
        export.export_split(data_copy, "train", teacher, out, **KW)


def test_full_disk_during_export_is_a_clear_error_and_leaves_no_temporary_file(
        synthetic_salicon_dir, tmp_path, capsys, monkeypatch):
    import errno

    def no_space(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._tmp)

    monkeypatch.setattr(shards.ShardWriter, "_finish", no_space)
    out = tmp_path / "d"
    code = export_teacher.main(["--split", "train", "--data-dir", str(synthetic_salicon_dir), "--teacher", "oracle",
                                "--input-size", "24", "32", "--out", str(out), "--images-per-shard", "3",
                                "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "run the same command again to resume" in err
    assert "Traceback" not in err and not list(out.glob(".*tmp*"))


def test_flag_defaults_are_the_librarys():
    """export_teacher.py spells `teacher.export`'s defaults out so that --help needs no TensorFlow; they agree."""
    for name in ("DEFAULT_DATA_DIR", "DEFAULT_TEACHER", "DEFAULT_OUT_DIR", "DEFAULT_BATCH_SIZE", "DEFAULT_SHARD_SIZE_MB"):
        assert getattr(export_teacher, name) == getattr(export, name), name
    parser = export_teacher.build_parser()
    assert (parser.get_default("teacher"), parser.get_default("batch_size"), parser.get_default("shard_size_mb")) == (
        export.DEFAULT_TEACHER, export.DEFAULT_BATCH_SIZE, shards.DEFAULT_SHARD_SIZE_MB)


def test_zero_input_size_is_rejected_at_parse_time(capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_teacher.main(["--input-size", "0", "0"])
    assert exit_info.value.code == 2 and "--input-size: expected a positive integer" in capsys.readouterr().err


def test_unwritable_out_is_refused_before_the_export(synthetic_salicon_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = export_teacher.main(["--split", "train", "--data-dir", str(synthetic_salicon_dir), "--teacher", "oracle",
                                "--out", str(blocker / "out"), "--no-progress"])
    assert code == 1 and f"{blocker / 'out'}: cannot write output there" in capsys.readouterr().err


def test_other_files_beside_the_images_are_listed(data_copy, tmp_path, capsys):
    (data_copy / "images" / "train" / "scan.tif").write_bytes(b"II*\x00")
    export.export_split(data_copy, "train", OracleTeacher(data_copy, input_size=(24, 32)), tmp_path / "d", **KW)
    err = capsys.readouterr().err
    assert "skipped 1 file(s)" in err and str(data_copy / "images" / "train" / "scan.tif") in err


# --- issue 18: an export never deletes or mixes with records it did not write --------------------------------

def _shard_bytes(out, split="train"):
    return {p.name: p.read_bytes() for p in sorted(out.glob(f"{split}-*.tfrecord"))}


def _photos(data, tmp_path):
    """A folder of photos (the val images) beside the data: what `export_teacher.py --images photos/` reads."""
    photos = tmp_path / "photos"
    shutil.copytree(data / "images" / "val", photos)
    return photos


def test_images_export_into_a_records_folder_without_its_plan_deletes_nothing(data_copy, tmp_path):
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    out = tmp_path / "d"
    export.export_split(data_copy, "train", teacher, out, **KW)
    (out / "train.plan.json").unlink()  # only the outputs the README names were copied
    before = _shard_bytes(out)
    with pytest.raises(ValueError, match=rf"{out} already holds 'train' records .*no train\.plan\.json.*"
                                         r"never deletes records it did not write.*another --out"):
        export.export_split(_photos(data_copy, tmp_path), "train", teacher, out, dataset="images", **KW)
    assert _shard_bytes(out) == before and len(before) == 3
    assert json.loads((out / "train.json").read_text())["num_images"] == 8


def test_images_export_into_another_exports_folder_says_why_it_is_refused(data_copy, tmp_path):
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    out = tmp_path / "d"
    export.export_split(data_copy, "train", teacher, out, **KW)
    before = _shard_bytes(out)
    photos = _photos(data_copy, tmp_path)
    with pytest.raises(ValueError) as info:
        export.export_split(photos, "train", teacher, out, dataset="images", **KW)
    message = str(info.value)
    assert f"holds the 'train' records of another export (salicon from {data_copy}" in message
    assert f"not of {photos}" in message and "another --out" in message
    assert "the data folder has" not in message  # the photos are not to blame
    assert _shard_bytes(out) == before


def test_a_replaced_plan_deletes_only_its_own_shards(data_copy, tmp_path):
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    out = tmp_path / "d"
    bad = data_copy / "images" / "train" / f"{TRAIN_STEMS[0]}.jpg"  # first shard: nothing gets finished
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=str(bad)):
        export.export_split(data_copy, "train", teacher, out, **KW)
    foreign = out / "train-00000-of-00002.tfrecord"  # not a shard of this export's plan (3 shards)
    foreign.write_bytes(b"someone else's records")
    _remove_sample(data_copy, "train", TRAIN_STEMS[0])
    with pytest.raises(ValueError, match=rf"{foreign}: a 'train' shard that the plan .* does not list"):
        export.export_split(data_copy, "train", teacher, out, **KW)
    assert foreign.read_bytes() == b"someone else's records"


def test_rerun_of_a_finished_export_with_another_images_per_shard_says_it_keeps_the_shards(
        synthetic_salicon_dir, tmp_path, capsys):
    out = tmp_path / "d"
    export.export_split(synthetic_salicon_dir, "train", "oracle", out, **KW)
    before = _shard_bytes(out)
    capsys.readouterr()
    manifest = export.export_split(synthetic_salicon_dir, "train", "oracle", out, **dict(KW, images_per_shard=4))
    assert _shard_bytes(out) == before and manifest["num_shards"] == 3
    err = capsys.readouterr().err
    assert f"{out / 'train.plan.json'}: keeps its 3 shards of up to 3 images" in err
    assert "--images-per-shard 4 is not applied" in err


def test_images_export_names_the_subfolders_it_ignores(data_copy, tmp_path, capsys):
    photos = _photos(data_copy, tmp_path)
    (photos / "holiday").mkdir()
    shutil.copy(photos / f"{VAL_STEMS[0]}.jpg", photos / "holiday" / "beach.jpg")
    (photos / "raw").mkdir()
    teacher = OracleTeacher(data_copy, input_size=(24, 32))
    manifest = export.export_split(photos, "train", teacher, tmp_path / "d", dataset="images", **KW)
    assert manifest["num_images"] == 4
    err = capsys.readouterr().err
    assert f"--images reads only the images directly in {photos}: 2 subfolder(s) ignored: holiday, raw" in err

    only_folders = tmp_path / "albums"
    shutil.copytree(photos / "holiday", only_folders / "holiday")
    with pytest.raises(FileNotFoundError, match=rf"{only_folders}: no images directly in this folder, only "
                                                r"subfolders \(holiday\)"):
        export.export_split(only_folders, "train", teacher, tmp_path / "e", dataset="images", **KW)


def test_images_export_warns_about_the_flags_it_ignores(data_copy, tmp_path, capsys):
    photos = _photos(data_copy, tmp_path)
    shutil.copytree(data_copy / "densities", photos / "densities")  # so that the oracle can label the photos
    base = ["--images", str(photos), "--teacher", "oracle", "--input-size", "24", "32", "--no-progress"]
    code = export_teacher.main(base + ["--out", str(tmp_path / "d"), "--sigma", "3", "--split-file",
                                       str(tmp_path / "missing.json"), "--dataset", "osie"])
    captured = capsys.readouterr()
    assert code == 0
    warning = ("export_teacher.py: warning: --dataset, --split-file, --sigma only apply to data sets with human data "
               "(--data-dir); ignored with --images")
    assert warning in captured.err and "warning" not in captured.out
    assert export_teacher.main(base + ["--out", str(tmp_path / "e")]) == 0
    assert "warning: --" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["teacher.keras", "teacher.h5", "model_salicon_cpu.weights.h5"])
def test_a_garbage_teacher_file_is_named_with_the_true_cause(name, synthetic_salicon_dir, tmp_path, capsys):
    garbage = tmp_path / name
    garbage.write_bytes(b"not a model at all " * 50)
    code, err = run_cli(["--split", "val", "--data-dir", str(synthetic_salicon_dir), "--teacher", str(garbage),
                         "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{garbage}: not a" in err and "corrupt" in err
    assert "File not found" not in err and "free space" not in err
