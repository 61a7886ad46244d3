"""Dataset readers: checksummed, offline-first, clear errors; paths are arguments.

Data live in `<data_dir>/<dataset>/` (default data directory: `$HYPERNET_DATA_DIR`, else
`~/.cache/hypernet/data`); derived files (Omniglot at 28x28) in a cache directory
(`$HYPERNET_CACHE_DIR`, else `~/.cache/hypernet/cache`). Nothing is downloaded unless a
reader is called with `download=True`, or `python -m hypernet.data.fetch <dataset> ...` is run
(`hypernet.data.fetch`: resumable, checksummed downloads; where to place files by hand).

* Omniglot: `load_omniglot`, `maml_split`, `official_split`, `class_images`
  (episodes: `hypernet.tasks.omniglot.OmniglotEpisodes`).
* MNIST, Fashion-MNIST: `load_mnist`, `load_fashion_mnist`, `read_idx`; MNIST-1D: `load_mnist1d`,
  `generate_mnist1d` (offline, with the PyPI package `mnist1d`); continual learning:
  `permuted_mnist_tasks`, `permute_pixels`, `split_mnist_tasks`.
"""

from hypernet.data._io import (ChecksumError, CorruptFileError, KnownFile, MissingDataError,
                               cache_dir, data_dir, sha256sum)
from hypernet.data.mnist import (SPLIT_MNIST_PAIRS, SplitTask, generate_mnist1d,
                                 load_fashion_mnist, load_mnist, load_mnist1d, permute_pixels,
                                 permuted_mnist_tasks, read_idx, read_mnist1d_pkl,
                                 split_mnist_tasks, verify_mnist1d_arrays)
from hypernet.data.omniglot import (OmniglotData, class_images, load_omniglot, maml_split,
                                    official_split, read_omniglot_npz, read_omniglot_zip)

__all__ = [
    'ChecksumError', 'CorruptFileError', 'KnownFile', 'MissingDataError', 'cache_dir', 'data_dir',
    'sha256sum', 'OmniglotData', 'class_images', 'load_omniglot', 'maml_split', 'official_split',
    'read_omniglot_npz', 'read_omniglot_zip', 'SPLIT_MNIST_PAIRS', 'SplitTask',
    'load_fashion_mnist', 'load_mnist', 'load_mnist1d', 'permute_pixels', 'permuted_mnist_tasks',
    'read_idx', 'read_mnist1d_pkl', 'split_mnist_tasks', 'generate_mnist1d',
    'verify_mnist1d_arrays',
]
