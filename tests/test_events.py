"""TensorBoard event files (`experiments.events`): written with tensorboardX, read back with
the purge a resumed run relies on, and bad files named."""

import pytest

from experiments import events


def test_scalars_round_trip_and_a_resume_purges_the_interrupted_steps(tmp_path):
  with events.EventWriter(str(tmp_path)) as w:  # an attempt interrupted after step 4
    for step in (1, 2, 3, 4):
      w.write(step, {'step': step, 'loss': 10.0 + step, 'flag': True, 'name': 'x',
                     'bad': float('nan')}, skip=('step',))
  with events.EventWriter(str(tmp_path), start_step=3) as w:  # resumed from step 2's checkpoint
    for step in (3, 4, 5):
      w.write(step, {'loss': 20.0 + step})
  scalars = events.read_scalars(str(tmp_path / events.EVENTS_DIR))
  assert set(scalars) == {'loss'}  # no step, bool, string or non-finite value
  assert scalars['loss'] == [(1, 11.0), (2, 12.0), (3, 23.0), (4, 24.0), (5, 25.0)]


def test_missing_or_damaged_event_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='no events.out.tfevents'):
    events.read_scalars(str(tmp_path))
  with events.EventWriter(str(tmp_path)) as w:
    w.write(1, {'loss': 1.0})
  (path,) = (tmp_path / events.EVENTS_DIR).glob('events.out.tfevents.*')
  path.write_bytes(path.read_bytes()[:-6])
  with pytest.raises(ValueError, match='cut short'):
    events.read_scalars(str(tmp_path / events.EVENTS_DIR))
