"""The one grammar of the config files' argument: `--config=<file>.py:<arg>`.

`arg` is a comma-separated list of `key=value` items and bare variant names, as in
big_vision's `parse_arg`: `'algo=maml,ways=20,smoke'`. Each config file declares its keys
with their defaults and allowed values, and its variants:

    a = common.parse_arg(arg, variants=('smoke',), algo=common.OneOf('amortised', ALGOS),
                         ways=common.AtLeast(5, 2))
    a.algo, a.ways, a.smoke   # 'maml', 20, True

A key not declared, a value not allowed or a repeated key is a ValueError naming the item
and what was expected; so is the same in every experiment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
import ml_collections

# The algorithms (`experiments.learners.build_learner` builds each), named here once.
GRADIENT_ALGOS = ('maml', 'fomaml', 'metasgd', 'anil', 'reptile')
HYPER_ALGOS = ('amortised', 'latent', 'hypermaml', 'learned_update')
# classification with an embedding network (shared, or modulated per task by `support_metric`)
METRIC_ALGOS = ('protonet', 'hyperhead', 'support_metric')
ALGOS = GRADIENT_ALGOS + HYPER_ALGOS  # any loss (regression and classification)
CLASSIFICATION_ALGOS = ALGOS + METRIC_ALGOS


@dataclasses.dataclass(frozen=True)
class OneOf:
  """A key whose value is one of `choices` (strings); `default` where not given (may be
  None, meaning "chosen by the config file from the other keys")."""
  default: str | None
  choices: tuple[str, ...]

  def parse(self, key: str, value: str) -> str:
    if value not in self.choices:
      raise ValueError(f'config {key}: expected one of {self.choices}, received {value!r}.')
    return value


@dataclasses.dataclass(frozen=True)
class AtLeast:
  """An integer key `>= minimum`."""
  default: int
  minimum: int

  def parse(self, key: str, value: str) -> int:
    if not value.isdigit() or int(value) < self.minimum:
      raise ValueError(f'config {key}: expected an integer >= {self.minimum}, received '
                       f'{value!r}.')
    return int(value)


def parse_arg(arg: str | None, *, variants: Sequence[str] = (),
              **spec: OneOf | AtLeast) -> ml_collections.ConfigDict:
  """`arg` read with `spec` (key -> `OneOf` / `AtLeast`) and `variants` (bare names).

  Returns:
    a locked `ConfigDict` with every key of `spec` (its value, else its default) and every
    variant (True where given, else False).

  Raises:
    ValueError: an item that is neither `key=value` with a declared key nor a variant; a
      value the key does not allow; a key or variant given twice.
  """
  out = {key: s.default for key, s in spec.items()}
  out.update({name: False for name in variants})
  seen = set()
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition('=')
    if (sep and key not in spec) or (not sep and item not in variants):
      keys = ', '.join(f'`{k}=<value>`' for k in spec)
      raise ValueError(f'config argument: expected {keys} or a variant in {tuple(variants)}, '
                       f'comma-separated, received {item!r} (in {arg!r}).')
    if key in seen:
      raise ValueError(f'config argument: {key!r} given twice (in {arg!r}).')
    seen.add(key)
    out[key] = spec[key].parse(key, value) if sep else True
  return ml_collections.ConfigDict(out, type_safe=False).lock()

