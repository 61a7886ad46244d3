"""Task families; a task is a `Task` pytree, a batch of tasks has a leading task axis."""

from hypernet.tasks.base import Task, check_split
from hypernet.tasks.classification import Blobs
from hypernet.tasks.omniglot import OmniglotEpisodes, episodes_for_protocol
from hypernet.tasks.regression import FAMILIES, Harmonic, Polynomial, RegressionFamily, Sinusoid, make_family

__all__ = ['Blobs', 'OmniglotEpisodes', 'episodes_for_protocol', 'Task', 'check_split', 'FAMILIES', 'Harmonic', 'Polynomial', 'RegressionFamily',
           'Sinusoid', 'make_family']
