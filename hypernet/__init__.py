"""hypernet: hypernetworks for meta-learning in JAX and Flax.

Public API (re-exported here; see each module's docstring for shapes):

* `Target`: a stateless target network (`apply(params, x)` + `param_spec`).
* `ParamLayout`, `layout_for`: which leaves are generated, and the flat layout.
* Hypernetwork families: `FullHypernet`, `ChunkedHypernet`, `PerTensorHypernet`,
  `ModulationHypernet`, `InputConditioned`, `WeightConditionedHypernet`.
* Conditioning: `TaskEmbedding`, `SetEncoder`.
* Initialisation: `hypernet.init` (hyperfan-in / hyperfan-out).
"""

from hypernet import init
from hypernet.encoders import SetEncoder, TaskEmbedding
from hypernet.hypernets import (MLP, TRUNK_ACTIVATIONS, ChunkedHypernet, FullHypernet,
                                InputConditioned, ModulationHypernet, PerTensorHypernet,
                                WeightConditionedHypernet)
from hypernet.layout import LeafInfo, ParamLayout, layout_for
from hypernet.sketch import literal_sketch, seed_sketch
from hypernet.target import Target, check_tree_matches_spec, default_init
from hypernet.utils import compression_ratio, count_params

__version__ = '0.1.0'

__all__ = [
    'init', 'SetEncoder', 'TaskEmbedding', 'MLP', 'TRUNK_ACTIVATIONS', 'ChunkedHypernet',
    'FullHypernet', 'InputConditioned', 'ModulationHypernet', 'PerTensorHypernet',
    'WeightConditionedHypernet',
    'LeafInfo', 'ParamLayout', 'layout_for', 'literal_sketch', 'seed_sketch', 'Target',
    'check_tree_matches_spec', 'default_init', 'compression_ratio', 'count_params',
]
