"""Round trip of the distillation record schema, the tf.data pipelines and the flips."""

import json

import numpy as np
import pytest
import tensorflow as tf

from datasets import augment, records
from datasets.io import encode_png


def _example(rng, height=12, width=20, teacher_shape=(6, 10), n_fix=5):
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    saliency = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    teacher = rng.random(teacher_shape)
    fixations = np.stack([rng.integers(0, height, n_fix), rng.integers(0, width, n_fix)], axis=1)
    return image, saliency, teacher, fixations


def test_round_trip_keeps_every_field():
    rng = np.random.default_rng(0)
    image, saliency, teacher, fixations = _example(rng)
    image_png = encode_png(image)
    serialized = records.serialize_example(
        "COCO_val2014_000000000042", image_png, 12, 20, encode_png(saliency), teacher, fixations
    )
    parsed = records.parse_example(tf.constant(serialized))
    raw = tf.io.parse_single_example(serialized, records.FEATURES)

    assert raw["image/encoded"].numpy() == image_png  # original bytes stored unchanged
    assert parsed["stem"].numpy() == b"COCO_val2014_000000000042"
    assert (int(parsed["height"]), int(parsed["width"])) == (12, 20)
    np.testing.assert_array_equal(parsed["image"].numpy(), image)
    np.testing.assert_allclose(parsed["saliency"].numpy()[:, :, 0], saliency / 255.0, atol=1e-7)
    assert parsed["teacher"].shape == (6, 10, 1)
    # 16-bit quantisation: at most half a step of 1/65535.
    np.testing.assert_allclose(parsed["teacher"].numpy()[:, :, 0], teacher, atol=0.5 / 65535 + 1e-7)
    np.testing.assert_array_equal(parsed["fixations"].numpy(), fixations)
    assert bool(parsed["has_teacher"]) and bool(parsed["has_saliency"])


def test_record_without_teacher_map_or_fixations():
    rng = np.random.default_rng(1)
    image, saliency, _, _ = _example(rng)
    serialized = records.serialize_example("x", encode_png(image), 12, 20, encode_png(saliency))
    parsed = records.parse_example(tf.constant(serialized))
    assert not bool(parsed["has_teacher"])
    assert parsed["fixations"].shape == (0, 2)
    assert float(tf.reduce_sum(parsed["teacher"])) == 0.0


def test_observers_durations_and_dataset_round_trip():
    rng = np.random.default_rng(3)
    image, saliency, teacher, fixations = _example(rng, n_fix=4)
    fixations[1] = fixations[0]  # two observers on one pixel: both fixations are kept
    serialized = records.serialize_example(
        "i1", encode_png(image), 12, 20, encode_png(saliency), teacher, fixations,
        observers=[0, 3, 3, 14], durations=[180.5, 90.0, 301.0, 45.25], dataset="osie",
    )
    parsed = records.parse_example(tf.constant(serialized))
    np.testing.assert_array_equal(parsed["fixations"].numpy(), fixations)
    np.testing.assert_array_equal(parsed["observers"].numpy(), [0, 3, 3, 14])
    np.testing.assert_allclose(parsed["durations"].numpy(), [180.5, 90.0, 301.0, 45.25])
    assert parsed["dataset"].numpy() == b"osie"


def test_records_without_observers_read_as_unknown():
    rng = np.random.default_rng(4)
    image, saliency, teacher, fixations = _example(rng, n_fix=3)
    parsed = records.parse_example(
        tf.constant(records.serialize_example("x", encode_png(image), 12, 20, encode_png(saliency), teacher, fixations))
    )
    np.testing.assert_array_equal(parsed["observers"].numpy(), [-1, -1, -1])
    assert np.isnan(parsed["durations"].numpy()).all() and parsed["dataset"].numpy() == b""


def test_observers_must_match_the_fixations():
    with pytest.raises(ValueError, match="2 values for fixations/observer but 1 fixations"):
        records.serialize_example("x", b"", 12, 20, fixations=[[1, 1]], observers=[0, 1])


def test_fixations_outside_the_image_are_rejected():
    with pytest.raises(ValueError, match="inside the 12x20 image"):
        records.serialize_example("x", b"", 12, 20, fixations=[[12, 0]])


def test_list_shards_error_says_to_run_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_teacher.py --split train"):
        records.list_shards(tmp_path, "train")


def _manifest(folder, split, **teacher):
    teacher = {"name": "msinet", "sha256": "ab" * 32, "input_size": [240, 320], "pipeline": "repo", **teacher}
    (folder / f"{split}.json").write_text(json.dumps({"num_images": 1, "teacher": teacher}))


def test_an_unfinished_export_is_refused_naming_the_folder_and_the_command(tmp_path):
    (tmp_path / records.shard_name("val", 0, 3)).write_bytes(b"")
    (tmp_path / "val.plan.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: the export of split 'val' has not finished.*"
                                                rf"python export_teacher.py --split val --out {tmp_path}"):
        records.list_shards(tmp_path, "val")
    _manifest(tmp_path, "val")
    assert records.list_shards(tmp_path, "val") == [str(tmp_path / records.shard_name("val", 0, 3))]


def test_records_of_different_teachers_are_refused_unless_allowed(tmp_path):
    _manifest(tmp_path, "train")
    _manifest(tmp_path, "val")
    sources = [(tmp_path, "train"), (tmp_path, "val")]
    assert records.check_same_teacher(sources) == []
    _manifest(tmp_path, "val", input_size=[480, 640])
    with pytest.raises(ValueError, match=r"train.json and .*val.json differ: input_size \[240, 320\] vs \[480, 640\]"
                                         r".*--allow-mixed-records"):
        records.check_same_teacher(sources)
    _manifest(tmp_path, "val", pipeline="hub", sha256="cd" * 32)
    differences = records.check_same_teacher(sources, allow_mixed=True)
    assert len(differences) == 1 and "sha256" in differences[0] and "pipeline 'repo' vs 'hub'" in differences[0]


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """Eight records whose maps are a copy of the image's red channel, so flips can be checked."""
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("records") / records.shard_name("train", 0, 1)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(8):
            image = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
            red = image[:, :, 0]
            teacher = red / 255.0
            writer.write(
                records.serialize_example(f"img{i}", encode_png(image), 16, 24, encode_png(red), teacher)
            )
    return path


def test_training_dataset_shapes_and_ranges(shard):
    ds = records.training_dataset([shard], batch_size=3, image_size=(8, 12), training=True, seed=0)
    batches = list(ds)
    assert len(batches) == 2  # 8 records, last partial batch dropped when training
    images, targets = batches[0]
    assert images.shape == (3, 8, 12, 3) and images.dtype == tf.float32
    assert set(targets) == {"saliency", "teacher", "valid", "has_saliency"}
    # 16x24 has the aspect ratio of 8x12: nothing is padded.
    assert float(tf.reduce_min(targets["valid"])) == 1.0 and targets["has_saliency"].numpy().tolist() == [1, 1, 1]
    assert targets["saliency"].shape == (3, 8, 12, 1) and targets["teacher"].shape == (3, 8, 12, 1)
    assert 0.0 <= float(tf.reduce_min(targets["saliency"])) and float(tf.reduce_max(targets["saliency"])) <= 1.0


def test_validation_dataset_keeps_order_and_every_record(shard):
    ds = records.training_dataset([shard], batch_size=3, image_size=(16, 24), training=False, with_teacher=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [3, 3, 2]
    assert set(batches[0][1]) == {"saliency", "valid", "has_saliency"}


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(records.serialize_example(**example))


def test_fit_box_keeps_the_aspect_ratio():
    assert [int(v) for v in records.fit_box(1024, 768, (240, 320))] == [0, 70, 240, 180]  # portrait
    assert [int(v) for v in records.fit_box(480, 640, (240, 320))] == [0, 0, 240, 320]  # SALICON: exact
    assert [int(v) for v in records.fit_box(100, 400, (240, 320))] == [80, 0, 80, 320]  # panorama


def test_portrait_image_is_letterboxed_not_stretched(tmp_path):
    """A 40x20 portrait into a 20x20 frame: the image fills the middle 10 columns, aspect kept, maps aligned."""
    image = np.zeros((40, 20, 3), np.uint8)
    image[:, :10] = 200  # left half bright
    saliency = np.zeros((40, 20), np.uint8)
    saliency[:20] = 255  # top half salient
    path = tmp_path / records.shard_name("train", 0, 1)
    _write(path, [dict(stem="p", image_bytes=encode_png(image), height=40, width=20,
                       saliency_png=encode_png(saliency), teacher_map=saliency / 255.0)])
    images, targets = next(iter(records.training_dataset([path], 1, (20, 20), training=False)))
    valid = targets["valid"].numpy()[0, :, :, 0]
    np.testing.assert_array_equal(valid, np.pad(np.ones((20, 10)), ((0, 0), (5, 5))))
    img = images.numpy()[0]
    np.testing.assert_allclose(img[:, :5], np.broadcast_to(records.PAD_COLOUR, (20, 5, 3)), atol=1e-3)
    assert img[10, 6, 0] == pytest.approx(200, abs=1) and img[10, 13, 0] == pytest.approx(0, abs=1)
    for key in ("saliency", "teacher"):
        m = targets[key].numpy()[0, :, :, 0]
        assert m[:, :5].max() == 0 and m[:, 15:].max() == 0  # padding carries no mass
        assert m[4, 10] == pytest.approx(1, abs=1e-3) and m[15, 10] == pytest.approx(0, abs=1e-3)
    stretched = records.training_dataset([path], 1, (20, 20), training=False, resize="stretch")
    assert float(tf.reduce_min(next(iter(stretched))[1]["valid"])) == 1.0


def test_records_without_human_maps_are_kept_only_for_distillation(tmp_path):
    rng = np.random.default_rng(5)
    examples = []
    for i in range(6):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        saliency_png = encode_png(image[:, :, 0]) if i % 3 == 0 else b""  # 2 labelled, 4 teacher-only
        examples.append(dict(stem=f"i{i}", image_bytes=encode_png(image), height=8, width=8,
                             saliency_png=saliency_png, teacher_map=image[:, :, 1] / 255.0))
    path = tmp_path / records.shard_name("train", 0, 1)
    _write(path, examples)
    with_teacher = records.training_dataset([path], 6, (8, 8), training=False)
    assert next(iter(with_teacher))[1]["has_saliency"].numpy().tolist() == [1, 0, 0, 1, 0, 0]
    human_only = records.training_dataset([path], 6, (8, 8), training=False, with_teacher=False)
    assert next(iter(human_only))[1]["has_saliency"].numpy().tolist() == [1, 1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of four records; record i's image is filled with the value 10 * i."""
    root = tmp_path_factory.mktemp("shards")
    paths = []
    for s in range(3):
        path = root / records.shard_name("train", s, 3)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in range(4 * s, 4 * s + 4):
                image = np.full((8, 8, 3), 10 * i, np.uint8)
                gray = image[:, :, 0]
                writer.write(records.serialize_example(f"img{i}", encode_png(image), 8, 8, encode_png(gray), gray / 255.0))
        paths.append(path)
    return paths


def _training_order(files, seed):
    ds = records.training_dataset(files, batch_size=4, image_size=(8, 8), flips="none", seed=seed)
    return [int(round(float(image[0, 0, 0]) / 10)) for images, _ in ds for image in images]


def test_training_order_is_shuffled_across_shards_and_seeded(shards):
    first = _training_order(shards, seed=1)
    assert sorted(first) == list(range(12))  # every record once per epoch
    assert first != list(range(12))
    assert _training_order(shards, seed=1) == first
    assert any(_training_order(shards, seed=s) != first for s in (2, 3))


def _cached_order(examples, seed):
    ds = records.training_dataset(None, batch_size=4, flips="none", seed=seed, examples=examples)
    return [int(round(float(image[0, 0, 0]) / 10)) for images, _ in ds for image in images]


def test_cached_examples_match_the_uncached_pipeline_and_are_reshuffled_per_seed(shards):
    examples = records.decoded_examples(shards, image_size=(8, 8)).cache()
    first = _cached_order(examples, seed=1)
    assert sorted(first) == list(range(12)) and first != list(range(12))
    assert _cached_order(examples, seed=1) == first  # reproducible per seed, as the uncached pipeline
    assert any(_cached_order(examples, seed=s) != first for s in (2, 3))
    # The same examples as the uncached pipeline: every target equal, record by record.
    cached = {int(round(float(x[0, 0, 0]) / 10)): (x, {k: v[i] for k, v in t.items()})
              for xs, t in records.training_dataset(None, 12, training=False, examples=examples)
              for i, x in enumerate(xs)}
    for xs, t in records.training_dataset(shards, 12, (8, 8), training=False):
        for i, x in enumerate(xs):
            image, targets = cached[int(round(float(x[0, 0, 0]) / 10))]
            np.testing.assert_array_equal(image, x)
            for k, v in t.items():
                np.testing.assert_array_equal(targets[k], v[i])


def test_cache_serves_later_epochs_without_reading_the_records(shards, tmp_path):
    """A cache filled by one epoch serves the next even when the record files are gone."""
    import shutil

    copies = [shutil.copy(path, tmp_path / path.name) for path in shards]
    examples = records.decoded_examples(copies, image_size=(8, 8)).cache()
    first = sorted(_cached_order(examples, seed=4))
    for path in copies:
        (tmp_path / path.name).unlink()
    assert sorted(_cached_order(examples, seed=5)) == first == list(range(12))


def test_flips_are_identical_for_image_and_both_maps(shard):
    ds = records.training_dataset([shard], batch_size=8, image_size=(16, 24), flips="both", seed=3)
    images, targets = next(iter(ds))
    red = images[..., :1].numpy() / 255.0
    # Both maps were the red channel before augmentation, so they still are after it.
    np.testing.assert_allclose(targets["saliency"].numpy(), red, atol=1e-5)
    np.testing.assert_allclose(targets["teacher"].numpy(), red, atol=1e-4)


def test_flips_are_seeded_and_cover_all_four_cases():
    image = tf.reshape(tf.range(6 * 10 * 3, dtype=tf.float32), (6, 10, 3))
    ds = tf.data.Dataset.from_tensors({"image": image}).repeat(64)
    seen = set()
    first = [x["image"].numpy() for x in augment.random_flips(ds, "both", seed=7)]
    again = [x["image"].numpy() for x in augment.random_flips(ds, "both", seed=7)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for x in first:
        lr = np.array_equal(x, image.numpy()[:, ::-1]) or np.array_equal(x, image.numpy()[::-1, ::-1])
        ud = np.array_equal(x, image.numpy()[::-1]) or np.array_equal(x, image.numpy()[::-1, ::-1])
        seen.add((lr, ud))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_flipped_fixations_land_on_the_same_map_values():
    rng = np.random.default_rng(4)
    height, width = 7, 11
    saliency = rng.random((height, width, 1)).astype(np.float32)
    teacher = saliency[::2, ::2]  # the teacher's lower resolution; odd sizes make subsampling commute with flips
    fixations = np.array([[0, 0], [6, 10], [3, 4], [2, 9]], np.int32)
    example = {
        "image": tf.constant(rng.random((height, width, 3)), tf.float32),
        "saliency": tf.constant(saliency),
        "teacher": tf.constant(teacher),
        "fixations": tf.constant(fixations),
        "height": tf.constant(height),
        "width": tf.constant(width),
    }
    for lr in (False, True):
        for ud in (False, True):
            out = augment.flip_example(example, tf.constant(lr), tf.constant(ud))
            fix = out["fixations"].numpy()
            flipped = out["saliency"].numpy()[:, :, 0]
            np.testing.assert_array_equal(flipped[fix[:, 0], fix[:, 1]], saliency[fixations[:, 0], fixations[:, 1], 0])
            expected = saliency[::-1 if ud else 1, ::-1 if lr else 1][::2, ::2]
            np.testing.assert_array_equal(out["teacher"].numpy(), expected)


def test_unknown_flip_mode_is_rejected():
    with pytest.raises(ValueError, match="flips=.diagonal."):
        augment.random_flips(tf.data.Dataset.range(1), "diagonal")


def test_label_fraction_keeps_a_fixed_nested_subset_of_human_maps(tmp_path):
    stems = tf.constant([f"img{i:04d}" for i in range(2000)])
    twenty = records.keeps_human_map(stems, 0.2).numpy()
    ten = records.keeps_human_map(stems, 0.1).numpy()
    assert abs(twenty.mean() - 0.2) < 0.03 and abs(ten.mean() - 0.1) < 0.03
    assert not (ten & ~twenty).any()  # nested: every record kept at 10% is kept at 20%
    np.testing.assert_array_equal(records.keeps_human_map(stems, 0.2).numpy(), twenty)
    # In the pipeline: the dropped records keep their teacher map but lose the human map.
    rng = np.random.default_rng(6)
    examples = []
    for i in range(40):
        image = rng.integers(1, 256, (8, 8, 3), dtype=np.uint8)
        examples.append(dict(stem=f"img{i:04d}", image_bytes=encode_png(image), height=8, width=8,
                             saliency_png=encode_png(image[:, :, 0]), teacher_map=image[:, :, 1] / 255.0))
    path = tmp_path / records.shard_name("train", 0, 1)
    _write(path, examples)
    expected = records.keeps_human_map(tf.constant([e["stem"] for e in examples]), 0.2).numpy()
    _, targets = next(iter(records.training_dataset([path], 40, (8, 8), training=False, label_fraction=0.2)))
    np.testing.assert_array_equal(targets["has_saliency"].numpy(), expected.astype(np.float32))
    sums = targets["saliency"].numpy().sum(axis=(1, 2, 3))
    assert (sums[~expected] == 0).all() and (sums[expected] > 0).all()
    assert (targets["teacher"].numpy().sum(axis=(1, 2, 3)) > 0).all()
    human_only = records.training_dataset([path], 40, (8, 8), training=False, with_teacher=False, label_fraction=0.2)
    assert len(next(iter(human_only))[0]) == expected.sum()


def test_contract_records_of_different_teacher_input_sizes_are_refused(tmp_path):
    """Issue 18: the whole teacher entry is compared (here --teacher-max-side), not only name/sha256/size/pipeline."""
    contract = {"name": "fastgaze", "format": "saved_model", "backend": "graph", "contract": "saliency-model/v1",
                "input_size": None, "pipeline": None, "max_input_side": None, "map_max_side": 320,
                "path": "/data/models/fastgaze"}
    _manifest(tmp_path, "train", **contract)
    _manifest(tmp_path, "val", **dict(contract, max_input_side=512))
    sources = [(tmp_path, "train"), (tmp_path, "val")]
    with pytest.raises(ValueError, match=r"train.json and .*val.json differ: max_input_side None vs 512"):
        records.check_same_teacher(sources)
    _manifest(tmp_path, "val", **dict(contract, path="/elsewhere/fastgaze"))  # the same file, copied elsewhere
    assert records.check_same_teacher(sources) == []
