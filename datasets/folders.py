"""Folder helpers shared by the data set readers: files paired by stem, whatever the data set."""

import os

# The image files every tool lists (readers, predict.py, crop.py, the teacher export): what tf.io.decode_image
# and OpenCV both read.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MAP_EXTENSIONS = (".png", ".jpg", ".jpeg")


def is_hidden(name):
    """Whether a file name is hidden (`.name`: macOS's `._photo.jpg` metadata, temporary files): never an input."""
    return name.startswith(".")


def path_list(paths):
    """`paths` (files and folders) as a list: one path (a str or os.PathLike) is a list of one, not of letters."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def files_by_stem(folder, extensions, required=True):
    """Map stem -> path for the files in `folder` with one of `extensions` (hidden/temporary files skipped).

    Returns None when the folder does not exist and `required` is False.
    """
    if not os.path.isdir(folder):
        if required:
            raise FileNotFoundError(f"{folder}: folder not found")
        return None
    found = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if is_hidden(name) or ext.lower() not in extensions:
            continue
        if stem in found:
            raise ValueError(
                f"{folder}: two files share the stem {stem!r} ({os.path.basename(found[stem])}, {name}); keep one"
            )
        found[stem] = os.path.join(folder, name)
    if not found:
        raise FileNotFoundError(f"{folder}: no {'/'.join(extensions)} files in this split folder")
    return found


def check_pairs(images, others, what):
    """Check that `others` (stem -> path) has exactly the stems of `images`; errors name the odd file."""
    for stem, image_path in images.items():
        if stem not in others:
            folder = os.path.dirname(next(iter(others.values())))
            raise FileNotFoundError(f"{image_path}: no {what} file {stem}.* in {folder}")
    for stem, path in others.items():
        if stem not in images:
            folder = os.path.dirname(next(iter(images.values())))
            raise ValueError(f"{path}: {what} file without an image {stem}.* in {folder}; remove it or add the image")
