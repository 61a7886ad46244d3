"""One grammar for every config file's argument (`experiments/configs/common.py`)."""

import pytest

from experiments.configs import common
from experiments.configs import continual as continual_config
from experiments.configs import omniglot as omniglot_config
from experiments.configs import sinusoid as sinusoid_config

CONFIGS = {'sinusoid': (sinusoid_config, 'algo=maml,smoke'),
           'omniglot': (omniglot_config, 'algo=maml,ways=20,smoke'),
           'continual': (continual_config, 'benchmark=split_mnist,method=si,smoke')}


def test_parse_arg_reads_keys_and_variants():
  a = common.parse_arg('ways=20, algo=maml,smoke', variants=('smoke', 'paper'),
                       algo=common.OneOf('protonet', ('maml', 'protonet')),
                       ways=common.AtLeast(5, 2), size=common.OneOf(None, ('cpu', 'paper')))
  assert a.to_dict() == {'algo': 'maml', 'ways': 20, 'size': None, 'smoke': True,
                         'paper': False}
  with pytest.raises(AttributeError):  # locked: a misspelt key is an error, not a new key
    a.wayz = 3


@pytest.mark.parametrize('name', list(CONFIGS))
def test_every_config_file_speaks_it(name):
  module, arg = CONFIGS[name]
  module.get_config(arg)  # builds
  key = arg.split('=')[0]
  with pytest.raises(ValueError, match=rf"config {key}: expected one of .*received 'nope'"):
    module.get_config(f'{key}=nope')
  with pytest.raises(ValueError, match=rf"config argument: expected `{key}=<value>`.* or a "
                                       r"variant in \(.*'smoke'.*received 'smok'"):
    module.get_config('smok')
  first = arg.split(',')[0]
  with pytest.raises(ValueError, match=rf"config argument: '{key}' given twice"):
    module.get_config(f'{first},{first}')
