"""benchmarks/builtin_speed.py: the built-ins timed end to end as predict.py runs them (a real model, tiny photos,
short rounds: the bookkeeping and the table are tested, not the speed)."""

import json

import cv2
import numpy as np
import pytest

from benchmarks import builtin_speed


def test_a_built_in_is_timed_end_to_end_at_each_batch(tmp_path, capsys):
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 80), (45, 71), (80, 60)]):
        cv2.imwrite(str(photos / f"p{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "speed"
    assert builtin_speed.main(["--images", str(tmp_path / "photos"), "--models", "fastgaze-centre", "--batches", "1",
                               "3", "--min-seconds", "0.01", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["images"] == 3 and sorted(map(tuple, results["sizes"])) == [(45, 71), (60, 80), (80, 60)]
    assert [(r["model"], r["batch"]) for r in results["rows"]] == [("fastgaze-centre", 1), ("fastgaze-centre", 3)]
    assert all(r["images_per_s"] > 0 and r["load_s"] > 0 for r in results["rows"])
    assert capsys.readouterr().out == out.with_suffix(".md").read_text() + "\n"


def test_the_table_gives_each_model_its_ratio_to_fastgaze_centre_at_each_batch():
    rows = [{"model": m, "batch": b, "images_per_s": r, "load_s": 1.0, "load_average": 0.5}
            for m, b, r in [("saliency-kd", 1, 30.0), ("saliency-kd", 8, 40.0), ("fastgaze-centre", 1, 12.0),
                            ("fastgaze-centre", 8, 10.0)]]
    table = builtin_speed.to_markdown({"rows": rows, "images": 8, "cpu": "cpu", "date": "today"})
    assert "| saliency-kd | 1.0 | 30.0 (2.50x) | 40.0 (4.00x) |" in table
    assert "| fastgaze-centre | 1.0 | 12.0 (1.00x) | 10.0 (1.00x) |" in table


def test_a_folder_without_photos_is_named(tmp_path, capsys):
    assert builtin_speed.main(["--images", str(tmp_path), "--out", str(tmp_path / "speed")]) == 1
    assert f"{tmp_path}: no images" in capsys.readouterr().err
    assert not (tmp_path / "speed.json").exists()


def test_a_report_is_written_whole_or_not_at_all(tmp_path):
    """`datasets.io.write_report`, which every benchmark script writes its .json / .md pair with."""
    from datasets.io import write_report

    stem = tmp_path / "new" / "folder" / "results"
    write_report(str(stem), {"rows": [1, 2]}, "| a |\n")
    assert json.loads(stem.with_suffix(".json").read_text()) == {"rows": [1, 2]}
    assert stem.with_suffix(".md").read_text() == "| a |\n"
    broken = tmp_path / "broken"
    with pytest.raises(TypeError):
        write_report(str(broken), {"rows": object()}, "| b |\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]  # no half-written JSON, no table without it
