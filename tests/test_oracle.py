"""The oracle teacher: a good but imperfect teacher for the synthetic data, deterministic, padded like MSI-Net."""

import numpy as np
import pytest

from teacher import preprocessing
from teacher.oracle import OracleTeacher

EPS = np.finfo(np.float64).eps


def kld(truth, prediction):
    """KL(truth || prediction) of sum-normalised maps (the MIT benchmark's form), written out independently."""
    p = truth / truth.sum()
    q = prediction / prediction.sum()
    return float(np.sum(p * np.log(EPS + p / (q + EPS))))


def cc(a, b):
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return float(np.mean(a * b))


def centre_gaussian(shape, sigma=0.25):
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    return np.exp(-0.5 * (((rows - shape[0] / 2) / (sigma * shape[0])) ** 2
                          + ((cols - shape[1] / 2) / (sigma * shape[1])) ** 2))


def upsample(teacher_map, box, shape):
    return np.asarray(preprocessing.postprocess(teacher_map[:, :, None], box, shape))[:, :, 0]


@pytest.fixture(scope="module")
def stems(synthetic_salicon_dir):
    return sorted(p.stem for p in (synthetic_salicon_dir / "densities" / "train").glob("*.npy"))


@pytest.mark.parametrize("input_size", [(48, 64), (24, 32)])
def test_oracle_is_between_centre_bias_and_truth(synthetic_salicon_dir, stems, input_size):
    oracle = OracleTeacher(synthetic_salicon_dir, input_size=input_size)
    scores = {"oracle": [], "centre": [], "truth_at_teacher_res": []}
    for stem in stems:
        truth = np.load(synthetic_salicon_dir / "densities" / "train" / f"{stem}.npy").astype(np.float64)
        teacher_map, box = oracle.predict(stem)
        # The best a teacher at this resolution could do: the truth itself, down- and upsampled.
        padded, truth_box = preprocessing.preprocess(truth[:, :, None] / truth.max(), input_size, pad_value=0)
        best = upsample(np.asarray(padded)[:, :, 0], truth_box, truth.shape)
        for name, prediction in (("oracle", upsample(teacher_map, box, truth.shape)),
                                 ("centre", centre_gaussian(truth.shape)), ("truth_at_teacher_res", best)):
            scores[name].append((kld(truth, prediction), cc(truth, prediction)))
    mean = {name: np.mean(values, axis=0) for name, values in scores.items()}
    (oracle_kld, oracle_cc), (centre_kld, centre_cc) = mean["oracle"], mean["centre"]
    best_kld, best_cc = mean["truth_at_teacher_res"]
    # Clearly better than a centre-bias map, on every image and on average.
    assert all(o[0] < c[0] for o, c in zip(scores["oracle"], scores["centre"]))
    assert oracle_kld < 0.5 * centre_kld
    assert oracle_cc > centre_cc + 0.4
    # Clearly worse than the truth, even the truth at the teacher's resolution.
    assert oracle_kld > best_kld + 0.1
    assert oracle_cc < best_cc - 0.05
    assert 0.6 < oracle_cc < 0.95  # a good teacher, like MSI-Net's CC of about 0.9 on SALICON


def test_oracle_maps_are_padded_like_the_teacher_input(synthetic_salicon_dir, stems):
    # 48x64 images into a 48x48 input: scale 0.75 -> 36x48, padding 6 rows above and below.
    oracle = OracleTeacher(synthetic_salicon_dir, input_size=(48, 48))
    images = np.zeros((2, 48, 48, 3), np.float32)
    maps = np.asarray(oracle(images, stems=stems[:2]))
    assert maps.shape == (2, 48, 48, 1) and maps.dtype == np.float32
    assert np.all(maps[:, :6] == 0) and np.all(maps[:, 42:] == 0)
    inside = maps[:, 6:42]
    assert inside.min() == 0.0 and np.allclose(inside.max(axis=(1, 2, 3)), 1.0)
    _, box = oracle.predict(stems[0])
    assert np.asarray(box).tolist() == [6, 0, 36, 48]


def test_oracle_is_deterministic_per_stem_and_seed(synthetic_salicon_dir, stems):
    first = OracleTeacher(synthetic_salicon_dir, input_size=(24, 32)).predict(stems[0])[0]
    again = OracleTeacher(synthetic_salicon_dir, input_size=(24, 32)).predict(stems[0])[0]
    other_seed = OracleTeacher(synthetic_salicon_dir, input_size=(24, 32), seed=1).predict(stems[0])[0]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other_seed).max() > 0.01
    a, b = (OracleTeacher(synthetic_salicon_dir, input_size=(24, 32)).manifest() for _ in range(2))
    assert a == b and a["sha256"] != OracleTeacher(synthetic_salicon_dir, seed=1).manifest()["sha256"]


def test_oracle_errors(synthetic_salicon_dir, stems, tmp_path):
    with pytest.raises(FileNotFoundError, match="synthetic"):
        OracleTeacher(tmp_path)
    oracle = OracleTeacher(synthetic_salicon_dir, input_size=(24, 32))
    with pytest.raises(ValueError, match="stems"):
        oracle(np.zeros((1, 24, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 24, 32, 3\)"):
        oracle(np.zeros((1, 48, 64, 3), np.float32), stems=stems[:1])
    with pytest.raises(FileNotFoundError, match="COCO_train2014_999999999999"):
        oracle(np.zeros((1, 24, 32, 3), np.float32), stems=["COCO_train2014_999999999999"])
    with pytest.raises(ValueError, match="gamma"):
        OracleTeacher(synthetic_salicon_dir, gamma=0.0)
