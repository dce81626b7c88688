"""The README's code and commands: the SavedModel snippet runs as printed, and every CLI it names has --help."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.io import encode_jpeg

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_block_after(heading):
    section = README[README.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_savedmodel_snippet_runs_with_plain_tensorflow(tmp_path):
    from student.model import build_student
    from student.serving import export_saved_model

    export_saved_model(build_student("B", seed=0), tmp_path / "runs" / "B" / "saved_model", input_size=(32, 48))
    rng = np.random.default_rng(0)
    (tmp_path / "photo.jpg").write_bytes(encode_jpeg(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)))
    snippet = _python_block_after("Loading the exported model with plain TensorFlow")
    check = (
        "\nassert saliency_map.shape == (45, 61), saliency_map.shape"
        "\nassert abs(float(tf.reduce_sum(density)) - 1.0) < 1e-4"
        "\nassert 0.0 <= float(tf.reduce_min(saliency_map)) and float(tf.reduce_max(saliency_map)) <= 1.0 + 1e-6"
        "\nimport sys; assert not any(m.split('.')[0] in ('student', 'teacher', 'datasets', 'metrics') "
        "for m in sys.modules)\nprint('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("script", ["train.py", "export_teacher.py", "evaluate.py", "predict.py", "export_student.py",
                                    "crop.py", "app.py"])
def test_every_readme_script_is_named_and_has_help(script):
    assert f"python {script}" in README
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0 and "usage:" in result.stdout
    assert result.stderr == "", result.stderr[-1000:]  # no oneDNN / CUDA start-up lines
