"""Image classification KD: digits and image-folder data, class subsets, config and task."""
