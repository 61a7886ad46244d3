"""Hypernetwork families: each maps its conditioning input to a full target parameter tree."""

from hypernet.hypernets.base import MLP, TRUNK_ACTIVATIONS
from hypernet.hypernets.chunked import ChunkedHypernet
from hypernet.hypernets.dynamic import InputConditioned
from hypernet.hypernets.full import FullHypernet
from hypernet.hypernets.modulation import ModulationHypernet
from hypernet.hypernets.per_tensor import PerTensorHypernet
from hypernet.hypernets.weight_conditioned import WeightConditionedHypernet

__all__ = [
    'MLP', 'TRUNK_ACTIVATIONS', 'ChunkedHypernet', 'InputConditioned', 'FullHypernet',
    'ModulationHypernet', 'PerTensorHypernet', 'WeightConditionedHypernet',
]
