"""What the README and the docs/ pages show works: every command's script and flags exist, the install and test
commands are the ones CI runs, the links resolve, and the Python snippets run as printed."""

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.io import encode_jpeg

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}
MAX_README_LINES = 250
# Commands the pages show that run another project's code, not this repository's.
EXTERNAL_SCRIPTS = {"main.py": "MSI-Net's own repository (alexanderkroner/saliency) downloads SALICON with it"}


def _python_block_after(heading):
    """The first ```python block after `heading`, in whichever page has the heading."""
    for text in PAGES.values():
        if heading in text:
            section = text[text.index(heading):]
            return re.search(r"```python\n(.*?)```", section, re.S).group(1)
    raise AssertionError(f"no page has the heading {heading!r}")


def shown_commands(text):
    """Every `python ...` command in `text`'s code blocks and inline code, one string each.

    Backslash continuations are joined, `&&` / `;` split a line into commands and `# ...` comments are dropped.
    """
    pieces = [re.sub(r"\\\n\s*", " ", block) for block in re.findall(r"```[\w-]*\n(.*?)```", text, re.S)]
    outside_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    pieces += [" ".join(span.split()) for span in re.findall(r"`(python [^`]+)`", outside_blocks)]
    commands = []
    for piece in pieces:
        for line in piece.splitlines():
            line = re.split(r"\s#", line)[0]
            commands += [part.strip() for part in re.split(r"&&|;", line) if part.strip().startswith("python ")]
    return commands


def command_target(command):
    """("script.py" or "-m package.module", its flags) of a `python ...` command."""
    words = command.split()
    if words[1] == "-m":
        return f"-m {words[2]}", _flags(words[3:])
    return words[1], _flags(words[2:])


def _flags(words):
    return sorted({w.split("=")[0] for w in words if re.fullmatch(r"--[a-z][\w-]*(=.*)?", w)})


def missing_flags(flags, help_text):
    """The flags that `help_text` (argparse's --help output) does not list."""
    return [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", help_text)]


def _all_targets():
    targets = {}
    for page, text in PAGES.items():
        for command in shown_commands(text):
            target, flags = command_target(command)
            entry = targets.setdefault(target, {"flags": set(), "pages": set()})
            entry["flags"].update(flags)
            entry["pages"].add(page)
    return targets


TARGETS = _all_targets()


def _run_help(target):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *target.split(), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)


def _console_scripts():
    """The command lines the distribution installs (setup.cfg's console_scripts), as `<module>.py`."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return sorted(line.split("=")[1].strip().split(":")[0] + ".py" for line in lines)


def test_the_pages_show_commands_and_the_readme_stays_short():
    assert len(TARGETS) > 10, sorted(TARGETS)
    assert {"docs/real-data.md", "docs/studies.md", "docs/deployment.md", "docs/cropping.md",
            "docs/salicon-msinet.md", "docs/DESIGN.md"} <= set(PAGES)
    assert len(README.splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_shown_command_exists_and_its_flags_are_in_its_help(target):
    if target in EXTERNAL_SCRIPTS:
        return
    where = ", ".join(sorted(TARGETS[target]["pages"]))
    result = _run_help(target)
    assert result.returncode == 0 and "usage:" in result.stdout, (
        f"python {target} --help ({where}): {result.stderr[-1000:]}")
    missing = missing_flags(sorted(TARGETS[target]["flags"]), result.stdout)
    assert not missing, f"{where} show python {target} with {missing}, which its --help does not list"


@pytest.mark.parametrize("script", _console_scripts())
def test_every_installed_command_is_shown_and_its_help_is_clean(script):
    assert script in TARGETS, f"no page shows `python {script}`"
    result = _run_help(script)
    assert result.returncode == 0 and "usage:" in result.stdout
    assert result.stderr == "", result.stderr[-1000:]  # no oneDNN / CUDA start-up lines


def test_a_planted_wrong_command_is_caught():
    text = "```bash\npython predict.py photo.jpg --overlay \\\n    --no-such-flag  # comment --not-a-flag\n```\n"
    (command,) = shown_commands(text)
    assert command_target(command) == ("predict.py", ["--no-such-flag", "--overlay"])
    assert missing_flags(["--no-such-flag", "--overlay"], _run_help("predict.py").stdout) == ["--no-such-flag"]
    assert shown_commands("see `python -m experiments.study --seeds\n0 1`, then `pip install x`") == [
        "python -m experiments.study --seeds 0 1"]


def test_install_and_test_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = {name: re.search(rf"### {name}\n+```bash\n(.*?)\n```", README, re.S)
              for name in ("Install", "Run the tests")}
    assert all(blocks.values()), f"README needs a bash block under each of {sorted(blocks)} (.ci/run copies them)"
    install, tests = (block.group(1) for block in blocks.values())
    assert install in ci.splitlines() and tests in ci.splitlines(), (install, tests)
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = set(config["options.extras_require"])
    for page, text in PAGES.items():
        for named in re.findall(r"pip install -e \"\.\[([\w,-]+)\]\"", text):
            assert set(named.split(",")) <= extras, f"{page}: pip install -e .[{named}]: extras are {sorted(extras)}"


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def _anchors(text):
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)}


def broken_links(path, text):
    """The relative links and images of the markdown `text` of file `path` whose file or heading is missing."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    base = path.parent
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", link):
            continue
        file, _, anchor = link.partition("#")
        target = (base / file).resolve() if file else path
        if file and not target.exists():
            broken.append(f"{link} (no file {target})")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(
                text if target == path else target.read_text()):
            broken.append(f"{link} (no heading #{anchor} in {target.name})")
    return broken


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_relative_link_resolves(page):
    assert broken_links(ROOT / page, PAGES[page]) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section, with `code`\n")
    text = ("# Here\n[ok](other.md#a-section-with-code) [ok](#here) [web](https://example.com/x.md)\n"
            "[gone](missing.md) [anchor](other.md#no-such) ![fig](figures/none.png)\n```\n[in code](nowhere.md)\n```\n")
    found = broken_links(tmp_path / "page.md", text)
    assert len(found) == 3 and "missing.md" in found[0] and "#no-such" in found[1] and "none.png" in found[2], found


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


def _write_clip(path, frames=4, size=(48, 64)):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size[::-1])
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    writer.release()


def test_python_api_example_runs_as_printed(tmp_path):
    """The README's Python API block, in a fresh interpreter, on a shipped example photo and a tiny clip."""
    from datasets.io import read_image

    examples = ROOT / "inference" / "examples"
    shutil.copy(examples / "balloon.jpg", tmp_path / "photo.jpg")
    (tmp_path / "photos").mkdir()
    shutil.copy(examples / "fruit.jpg", tmp_path / "photos" / "fruit.jpg")
    _write_clip(tmp_path / "clip.mp4")
    height, width = read_image(tmp_path / "photo.jpg").shape[:2]
    snippet = _python_block_after("## Python API")
    assert "import saliency_kd" in snippet
    check = (
        f"\nassert saliency_map.shape == ({height}, {width}) and saliency_map.dtype == np.float32"
        f"\nassert len(maps) == 1 and maps[0].shape == ({height}, {width})"
        f"\nassert square.shape == (box.height, box.width, 3) and box.width == box.height == {min(height, width)}"
        "\nimport os"
        "\nfor name in ('fruit.png', 'fruit_overlay.jpg', 'clip_saliency.mp4'):"
        "\n    assert os.path.isfile(os.path.join('predictions', name)), name"
        "\nprint('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
