"""MIT1003 reader (Judd et al., ICCV 2009): the second standard benchmark, same sample shape as SALICON.

Three layouts are recognised under `root`, tried in this order:

* the original release: `ALLSTIMULI/<name>.jpeg` + `ALLFIXATIONMAPS/<name>_fixMap.jpg`, with optional
  fixation points `ALLFIXATIONMAPS/<name>_fixPts.jpg` (binary image: nonzero pixel = fixation);
* MSI-Net's download layout: `stimuli/<name>.jpeg`, `saliency/<name>_fixMap.jpg`, `fixations/<name>_fixPts.jpg`;
* a simplified layout with the map named like its stimulus: `stimuli/<name>.jpg`, `maps/<name>.jpg`
  (the project's `shared/data/mit1003_sample`).

MIT1003 has no official split; callers split the sorted list themselves. Load a sample with
`load_sample` (re-exported from `datasets.salicon`), which reads `_fixPts` images as fixations.
"""

import os

from datasets.folders import IMAGE_EXTENSIONS, MAP_EXTENSIONS, check_pairs, files_by_stem
from datasets.salicon import load_sample
from datasets.sample import FileSample

__all__ = ["list_mit1003", "load_sample", "FileSample"]

MAP_SUFFIX = "_fixMap"
POINTS_SUFFIX = "_fixPts"


def _strip(files, suffix):
    """Keep the files whose stem ends with `suffix`, keyed by the stem without it."""
    return {stem[: -len(suffix)]: path for stem, path in files.items() if stem.endswith(suffix)}


def list_mit1003(root):
    """List MIT1003 samples paired by stimulus name, sorted by name.

    Args:
        root: the MIT1003 folder in one of the layouts of the module docstring.

    Returns:
        A list of `FileSample` (`fixations_path` is the `_fixPts` image, or None when there is none).

    Raises:
        FileNotFoundError: naming `root` when no layout matches, or naming a stimulus without its map.
        ValueError: naming a map or fixation file without its stimulus.
    """
    root = os.fspath(root)
    if os.path.isdir(os.path.join(root, "ALLSTIMULI")):
        stimuli = files_by_stem(os.path.join(root, "ALLSTIMULI"), IMAGE_EXTENSIONS)
        both = files_by_stem(os.path.join(root, "ALLFIXATIONMAPS"), MAP_EXTENSIONS)
        maps, points = _strip(both, MAP_SUFFIX), _strip(both, POINTS_SUFFIX) or None
    elif os.path.isdir(os.path.join(root, "stimuli")) and os.path.isdir(os.path.join(root, "saliency")):
        stimuli = files_by_stem(os.path.join(root, "stimuli"), IMAGE_EXTENSIONS)
        maps = _strip(files_by_stem(os.path.join(root, "saliency"), MAP_EXTENSIONS), MAP_SUFFIX)
        points = files_by_stem(os.path.join(root, "fixations"), MAP_EXTENSIONS, required=False)
        points = _strip(points, POINTS_SUFFIX) if points is not None else None
    elif os.path.isdir(os.path.join(root, "stimuli")) and os.path.isdir(os.path.join(root, "maps")):
        stimuli = files_by_stem(os.path.join(root, "stimuli"), IMAGE_EXTENSIONS)
        maps = files_by_stem(os.path.join(root, "maps"), MAP_EXTENSIONS)
        points = None
    else:
        raise FileNotFoundError(
            f"{root}: not an MIT1003 folder; expected ALLSTIMULI/ + ALLFIXATIONMAPS/ (original release), "
            "stimuli/ + saliency/ [+ fixations/] (MSI-Net download) or stimuli/ + maps/ (maps named like the stimulus)"
        )
    if not maps:
        raise FileNotFoundError(f"{root}: no {MAP_SUFFIX} maps found next to the stimuli")
    check_pairs(stimuli, maps, "fixation map")
    if points:
        check_pairs(stimuli, points, "fixation points")
    return [
        FileSample(stem, path, maps[stem], points[stem] if points else None)
        for stem, path in sorted(stimuli.items())
    ]
